"""Run-time tile tables from tile kinds in two kernels (`kernels/compact.py`), as torch ops.

`compact_kinds(kind, transpose)` takes (G, R, C) int8 maps of tile kinds (2 full, 1 partial, 0
empty) and returns the tables of G layouts for one walk: lines are the maps' rows, or with
`transpose` their columns. Returned, for the full tiles and then the partial ones (a leading axis
of 2): pointers (G · (lines + 1) each; map g's at [g · (lines + 1), (g + 1) · (lines + 1)), global
offsets into the indices, as the kernels read them) and indices (G · lines · width each: every
line's tiles in increasing order; entries past the last pointer are zero, unused capacity); and
the programs' order (lines,): the lines by their stored tiles summed over the G maps, most first,
equals in line order (a stable descending sort), so that the longest start first.

Eager calls take them through `compacted` and `compacted_documents`, which call the ops' bodies
directly (a custom op's dispatch, some 13 µs a call on a 2-core development machine, is host time in
every call); traced calls go through the ops.

`compact_document_kinds(labels, kind, block_m, block_n, transpose)` returns the same for the
intersection of "same document" with one static (R, C) map (or with nothing): one table per row
of the (B, N) document numbers, each tile's kind decided inside the two kernels, so that a
documents call makes no kind map and dispatches no op per combinator.

Nothing is read back to the host and nothing's shape depends on the data, so a call can be
captured in a CUDA graph; torch ops, so that torch.compile keeps them whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from maskc.errors import BackendError
from maskc.tracing import tracing_mode

from .cache import interpreting
from .kernels import kernel_module
from .launching import launch_kernel

#: Lines per program and tiles per step along a line.
BLOCK_L, BLOCK_W = 16, 128

Tables = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class _Source:
    """Where the two kernels find the kinds: a map read through its strides and/or document numbers."""

    kind: torch.Tensor | None  # (G or 1, R, C) int8, or None
    labels: torch.Tensor | None  # (G, N) int32 document numbers, or None
    groups: int
    rows: int
    columns: int
    size_m: int = 0  # positions per row tile and per column tile (documents only)
    size_n: int = 0


def compacted(kind: torch.Tensor, transpose: bool) -> Tables:
    """`compact_kinds`, called as a plain function in eager calls (a custom op's dispatch costs host
    time in every call) and as the op under a tracer, which needs its fake implementation."""
    return (_compact_kinds if _eager(kind) else compact_kinds)(kind, transpose)


def compacted_documents(
    labels: torch.Tensor, kind: torch.Tensor | None, block_m: int, block_n: int, transpose: bool
) -> Tables:
    """`compact_document_kinds`, called as `compacted` calls `compact_kinds`."""
    op = _compact_document_kinds if _eager(labels) else compact_document_kinds
    return op(labels, kind, block_m, block_n, transpose)


def _eager(x: torch.Tensor) -> bool:
    """Whether a call on `x` runs eagerly: a plain tensor, no torch.compile, no tracing dispatch mode."""
    return type(x) is torch.Tensor and not torch.compiler.is_compiling() and not tracing_mode()


@torch.library.custom_op("maskc::compact_kinds", mutates_args=())
def compact_kinds(kind: torch.Tensor, transpose: bool) -> Tables:
    """(pointers (2, G · (lines + 1)), indices (2, G · lines · width), order (lines,)), int32, from
    kind (G, R, C) int8; lines are R (or C with `transpose`)."""
    return _compact_kinds(kind, transpose)


def _compact_kinds(kind: torch.Tensor, transpose: bool) -> Tables:
    if kind.dim() != 3 or kind.dtype != torch.int8:
        raise BackendError(f"compact_kinds takes (G, R, C) int8 tile kinds; got {tuple(kind.shape)} {kind.dtype}")
    groups, rows, columns = kind.shape
    return _compact(_Source(kind, None, groups, rows, columns), transpose)


@torch.library.custom_op("maskc::compact_document_kinds", mutates_args=())
def compact_document_kinds(
    labels: torch.Tensor, kind: torch.Tensor | None, block_m: int, block_n: int, transpose: bool
) -> Tables:
    """The tables of "same document" ∩ `kind` for each row of labels (B, N) int32 (non-decreasing
    document numbers), on tiles of block_m × block_n; `kind`, (R, C) int8 kinds of the pattern's static
    part shared by every row, or None for documents alone. Returned as `compact_kinds` returns them."""
    return _compact_document_kinds(labels, kind, block_m, block_n, transpose)


def _compact_document_kinds(
    labels: torch.Tensor, kind: torch.Tensor | None, block_m: int, block_n: int, transpose: bool
) -> Tables:
    if labels.dim() != 2 or labels.dtype != torch.int32 or min(block_m, block_n) < 1:
        raise BackendError(
            f"compact_document_kinds takes (B, N) int32 document numbers and positive tile sizes; got "
            f"{tuple(labels.shape)} {labels.dtype}, tiles {block_m} × {block_n}"
        )
    batch, n = labels.shape
    rows, columns = -(-n // block_m), -(-n // block_n)
    if kind is not None and (kind.shape != (rows, columns) or kind.dtype != torch.int8):
        raise BackendError(
            f"compact_document_kinds takes a ({rows}, {columns}) int8 map for {n} positions on {block_m} × "
            f"{block_n} tiles; got {tuple(kind.shape)} {kind.dtype}"
        )
    if kind is not None and kind.device != labels.device:
        raise BackendError(f"compact_document_kinds: the map is on {kind.device}, the labels on {labels.device}")
    shared = None if kind is None else kind.unsqueeze(0)
    return _compact(_Source(shared, labels.contiguous(), batch, rows, columns, block_m, block_n), transpose)


def _compact(source: _Source, transpose: bool) -> Tables:
    """Count each line's tiles of each kind, then write the tables and the programs' order (the
    kernels scan and rank the counts themselves: each op here is host time in every call)."""
    groups, lines, width = _walk_shape(source.groups, source.rows, source.columns, transpose)
    blocks = triton.cdiv(lines, BLOCK_L)
    if max(groups * lines * width, 2 * groups * (lines + blocks) + lines) >= 2**31:
        raise BackendError(f"{groups} × {lines} × {width} tiles do not fit int32 table offsets")
    device = (source.kind if source.labels is None else source.labels).device
    # per kind: each line's count (G · lines), then each block's total (G · blocks); then the lengths
    counts = torch.zeros(2 * groups * (lines + blocks) + lines, dtype=torch.int32, device=device)
    pointers = torch.empty(2, groups * (lines + 1), dtype=torch.int32, device=device)
    indices = torch.zeros(2, groups * lines * width, dtype=torch.int32, device=device)
    if groups * lines == 0:  # no table: no tiles, every line as long as the next
        return pointers.zero_(), indices, torch.arange(lines, dtype=torch.int32, device=device)
    order = torch.empty(lines, dtype=torch.int32, device=device)
    module = kernel_module("compact", interpreting())
    grid = (groups, blocks)  # groups on axis 0: axes 1 and 2 stop at 65,535
    kind, labels, strides, flags = _arguments(source, transpose, lines, width)
    launch_kernel(module.maskc_count_kinds, grid, kind, labels, counts, *strides, **flags)
    launch_kernel(module.maskc_write_kinds, grid, kind, labels, counts, pointers, indices, order, *strides, **flags)
    return pointers, indices, order


def _arguments(source: _Source, transpose: bool, lines: int, width: int) -> tuple:
    """The kernels' map, labels, scalar arguments and compile-time flags for `source`."""
    kind, labels = source.kind, source.labels
    stride_g = stride_line = stride_tile = 0
    if kind is not None:
        stride_g = kind.stride(0) if kind.shape[0] > 1 else 0  # one map for every table: stride 0
        stride_line, stride_tile = (kind.stride(2), kind.stride(1)) if transpose else (kind.stride(1), kind.stride(2))
    size_line, size_tile = (source.size_n, source.size_m) if transpose else (source.size_m, source.size_n)
    n, stride_labels = (0, 0) if labels is None else (labels.shape[1], labels.stride(0))
    strides = (stride_g, stride_line, stride_tile, lines, width, source.groups, stride_labels, n, size_line, size_tile)
    flags = {
        "BLOCK_L": BLOCK_L,
        "BLOCK_W": BLOCK_W,
        "HAS_MAP": kind is not None,
        "DOCUMENTS": labels is not None,
        "num_warps": 4,
    }
    # an absent input is passed as the other one (never read: its flag is off)
    return (labels if kind is None else kind), (kind if labels is None else labels), strides, flags


def _walk_shape(groups: int, rows: int, columns: int, transpose: bool) -> tuple[int, int, int]:
    return (groups, columns, rows) if transpose else (groups, rows, columns)


def _fake_tables(like: torch.Tensor, groups: int, rows: int, columns: int, transpose: bool) -> Tables:
    groups, lines, width = _walk_shape(groups, rows, columns, transpose)
    pointers = like.new_empty(2, groups * (lines + 1), dtype=torch.int32)
    indices = like.new_empty(2, groups * lines * width, dtype=torch.int32)
    return pointers, indices, like.new_empty(lines, dtype=torch.int32)


@compact_kinds.register_fake
def _(kind: torch.Tensor, transpose: bool) -> Tables:
    return _fake_tables(kind, *kind.shape, transpose)


@compact_document_kinds.register_fake
def _(labels: torch.Tensor, kind: torch.Tensor | None, block_m: int, block_n: int, transpose: bool) -> Tables:
    n = labels.shape[1]
    return _fake_tables(labels, labels.shape[0], -(-n // block_m), -(-n // block_n), transpose)
