"""Tensor descriptors (TMA) over the rows of q, k, v or dO, for kernels that load whole tiles through them.

On Hopper a kernel may load a [rows, dim] tile by one bulk copy through a tensor descriptor
instead of per-thread pointer loads (the copy engine computes the addresses and lands the tile in
shared memory). A descriptor here covers one tensor's storage as rows of `dim` elements from its
first element on, so the row of (batch b, head h, position c of the call) is
b · stride_b / dim + h · stride_h / dim + c, which the kernels compute. Kernels take this path only
for calls on whole tiles (`Span.even`): a tile then never reaches past its head's rows.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch


def row_descriptors(tensors: tuple[torch.Tensor, ...], block_rows: int) -> list[Any] | None:
    """One descriptor of [block_rows, dim] tiles per (B, H, N, dim) tensor, or None where TMA cannot read
    one (`descriptor_rows`): a view into a longer sequence (a context-parallel shard, a cache)
    qualifies, a (B, N, H, dim) layout does not."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    found = []
    for x in tensors:
        rows = descriptor_rows(x)
        if rows is None:
            return None
        found.append(TensorDescriptor(x, [rows, x.shape[-1]], [x.shape[-1], 1], [block_rows, x.shape[-1]]))
    return found


def gluon_row_descriptors(tensors: tuple[torch.Tensor, ...], block_rows: tuple[int, ...]) -> list[Any] | None:
    """`row_descriptors` for Gluon kernels (kernels/forward_ws.py), tensor i in [block_rows[i], dim]
    tiles, each with the swizzled shared layout that tile takes (the one the products read)."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    found = []
    for x, block in zip(tensors, block_rows, strict=True):
        rows = descriptor_rows(x)
        if rows is None or x.dtype not in ROW_ELEMENTS:
            return None
        dim = x.shape[-1]
        found.append(TensorDescriptor(x, [rows, dim], [dim, 1], [block, dim], _shared_layout((block, dim), x.dtype)))
    return found


#: The element types of tiles in shared memory, by the name Gluon gives them: rows of q, k, v, dO and
#: the outputs in 16-bit types, the row terms (lse, delta) in float32.
GLUON_ELEMENTS = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}
ROW_ELEMENTS = (torch.bfloat16, torch.float16)


@cache
def _shared_layout(block: tuple[int, ...], dtype: torch.dtype) -> Any:
    """The swizzled shared layout of a `block` tile of `dtype`, made once per block and type: the
    layout is a frozen value, and making it costs several microseconds of host time in every call."""
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout.get_default_for(list(block), getattr(gl, GLUON_ELEMENTS[dtype]))


def gluon_term_descriptors(terms: tuple[torch.Tensor, ...], block: int) -> list[Any]:
    """Descriptors of [block] pieces over contiguous float32 (B, H, N) row terms (lse, delta), read as
    one vector: the piece of (b, h, positions c … c + block) starts at (b · H + h) · N + c."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    layout = _shared_layout((block,), torch.float32)
    return [TensorDescriptor(x.view(-1), [x.numel()], [1], [block], layout) for x in terms]


def terms_readable(terms: torch.Tensor) -> bool:
    """Whether `gluon_term_descriptors` can read these (B, H, N) row terms: contiguous, and every piece's
    first element addressable by TMA's signed 32-bit coordinate."""
    return terms.is_contiguous() and terms.numel() < 2**31


def descriptor_rows(x: torch.Tensor) -> int | None:
    """Rows of `dim` elements a descriptor over x's storage spans, or None where TMA cannot read x.

    That needs rows of one stride `dim` (stride_n = dim, last stride 1), batch and head strides that
    are whole rows, and the 16-byte alignment TMA asks of the base and the row stride.
    """
    dim = x.shape[-1]
    strides = x.stride()
    if strides[3] != 1 or strides[2] != dim or strides[0] % dim or strides[1] % dim:
        return None
    if x.data_ptr() % 16 or (dim * x.element_size()) % 16:
        return None
    rows = ((x.shape[0] - 1) * strides[0] + (x.shape[1] - 1) * strides[1]) // dim + x.shape[2]
    return rows if rows < 2**31 else None
