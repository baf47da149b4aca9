"""Run-time tile tables from tile kinds in two kernels (`kernels/compact.py`), as one torch op.

`compact_kinds(kind, transpose)` takes (G, R, C) int8 maps of tile kinds (2 full, 1 partial, 0
empty) and returns the tables of G layouts for one walk: lines are the maps' rows, or with
`transpose` their columns. Returned, for the full tiles and then the partial ones (a leading axis
of 2): pointers (G · (lines + 1) each; map g's at [g · (lines + 1), (g + 1) · (lines + 1)), global
offsets into the indices, as the kernels read them) and indices (G · lines · width each: every
line's tiles in increasing order; entries past the last pointer are zero, unused capacity); and
each line's stored tiles summed over the G maps (lines,), which orders the programs.

Nothing is read back to the host and nothing's shape depends on the data, so a call can be
captured in a CUDA graph; a torch op, so that torch.compile keeps it whole.
"""

from __future__ import annotations

import torch
import triton

from maskc.errors import BackendError

from .cache import interpreting
from .kernels import kernel_module

#: Lines per program and tiles per step along a line.
BLOCK_L, BLOCK_W = 16, 128


@torch.library.custom_op("maskc::compact_kinds", mutates_args=())
def compact_kinds(kind: torch.Tensor, transpose: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pointers (2, G · (lines + 1)), indices (2, G · lines · width), lengths (lines,)), int32, from
    kind (G, R, C) int8; lines are R (or C with `transpose`)."""
    if kind.dim() != 3 or kind.dtype != torch.int8:
        raise BackendError(f"compact_kinds takes (G, R, C) int8 tile kinds; got {tuple(kind.shape)} {kind.dtype}")
    groups, lines, width = _walk_shape(kind, transpose)
    if groups * lines * width >= 2**31:
        raise BackendError(f"{groups} × {lines} × {width} tiles do not fit int32 table offsets")
    device = kind.device
    counts = torch.empty(2, groups, lines, dtype=torch.int32, device=device)
    pointers = torch.empty(2, groups * (lines + 1), dtype=torch.int32, device=device)
    indices = torch.zeros(2, groups * lines * width, dtype=torch.int32, device=device)
    if groups * lines == 0:
        return pointers.zero_(), indices, counts.sum(dim=(0, 1), dtype=torch.int32)
    stride_line, stride_tile = (kind.stride(2), kind.stride(1)) if transpose else (kind.stride(1), kind.stride(2))
    module = kernel_module("compact", interpreting())
    grid = (groups, triton.cdiv(lines, BLOCK_L))  # groups on axis 0: axes 1 and 2 stop at 65,535
    strides = (kind.stride(0), stride_line, stride_tile, lines, width, groups)
    module.maskc_count_kinds[grid](kind, counts, *strides, BLOCK_L=BLOCK_L, BLOCK_W=BLOCK_W, num_warps=4)
    ends = counts.view(2, -1).cumsum(1, dtype=torch.int32)
    module.maskc_write_kinds[grid](
        kind, counts, ends, pointers, indices, *strides, BLOCK_L=BLOCK_L, BLOCK_W=BLOCK_W, num_warps=4
    )
    return pointers, indices, counts.sum(dim=(0, 1), dtype=torch.int32)


def _walk_shape(kind: torch.Tensor, transpose: bool) -> tuple[int, int, int]:
    groups, rows, columns = kind.shape
    return (groups, columns, rows) if transpose else (groups, rows, columns)


@compact_kinds.register_fake
def _(kind: torch.Tensor, transpose: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    groups, lines, width = _walk_shape(kind, transpose)
    pointers = kind.new_empty(2, groups * (lines + 1), dtype=torch.int32)
    indices = kind.new_empty(2, groups * lines * width, dtype=torch.int32)
    return pointers, indices, kind.new_empty(lines, dtype=torch.int32)
