"""Tensor descriptors (TMA) over the rows of q, k, v or dO, for kernels that load whole tiles through them.

On Hopper a kernel may load a [rows, dim] tile by one bulk copy through a tensor descriptor
instead of per-thread pointer loads (the copy engine computes the addresses and lands the tile in
shared memory). A descriptor here covers one tensor's storage as rows of `dim` elements from its
first element on, so the row of (batch b, head h, position c of the call) is
b · stride_b / dim + h · stride_h / dim + c, which the kernels compute. Kernels take this path only
for calls on whole tiles (`Span.even`): a tile then never reaches past its head's rows.
"""

from __future__ import annotations

from typing import Any

import torch


def row_descriptors(tensors: tuple[torch.Tensor, ...], block_rows: int) -> list[Any] | None:
    """One descriptor of [block_rows, dim] tiles per (B, H, N, dim) tensor, or None where TMA cannot read one.

    That needs rows of one stride `dim` (stride_n = dim, last stride 1), batch and head strides that
    are whole rows, and the 16-byte alignment TMA asks of the base and the row stride; a view into a
    longer sequence (a context-parallel shard, a cache) qualifies, a (B, N, H, dim) layout does not.
    """
    from triton.tools.tensor_descriptor import TensorDescriptor

    found = []
    for x in tensors:
        dim = x.shape[-1]
        strides = x.stride()
        if strides[3] != 1 or strides[2] != dim or strides[0] % dim or strides[1] % dim:
            return None
        if x.data_ptr() % 16 or (dim * x.element_size()) % 16:
            return None
        rows = ((x.shape[0] - 1) * strides[0] + (x.shape[1] - 1) * strides[1]) // dim + x.shape[2]
        if rows >= 2**31:
            return None
        found.append(TensorDescriptor(x, [rows, dim], [dim, 1], [block_rows, dim]))
    return found
