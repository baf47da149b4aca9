"""Device tables from the IR: the full/partial split of every layout, concatenated, and a program order.

All heads run in one launch, so the tables of the distinct layouts are concatenated: layout L's
pointers sit at [L·(lines + 1), (L + 1)·(lines + 1)) and already include the offset of its
indices. "rows" tables walk query tiles (block-CSR: forward and dQ); "columns" tables walk key
tiles (block-CSC: dK/dV).

A rectangular call (span.py) walks a window of the grid: its tables keep only the tiles inside,
and `order` only the lines inside (`programs` of them; the pointers stay indexed by line).

`order` lists the lines longest first (tiles summed over layouts). The first `long_lines` of them
hold more than `LONG_FACTOR` times the median line: a global token's row or column. Kernels run
those first for every head, so that one long program does not start last and serialize the tail,
and then the rest head by head, so that programs running together share one head's keys and
values in L2.

A long line is also split into chunks (`chunk_line`, `chunk_start`, `chunk_ptr`): chunk c of a
line covers the positions [c · chunk_tiles, (c + 1) · chunk_tiles) of its tile list (full tiles
then partial ones, per layout: a layout with fewer tiles leaves its last chunks short or empty),
and runs as a program of its own that writes a float32 partial result; a merge combines a line's
partials exactly (log-sum-exp in the forward pass, a sum in the backward one). `chunk_tiles` is
`CHUNK_FACTOR` times the median of the non-empty lines (`typical_line`), so a chunk costs about
what an ordinary busy line costs and no chunk is itself long: one global row no longer sets the
critical path of the whole grid.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from maskc.ir import BlockLayout

Walk = Literal["rows", "columns"]
#: ((first line, end line), (first crossing tile, end crossing tile)) of a rectangular call.
Window = tuple[tuple[int, int], tuple[int, int]]

#: split() table names per walk: (pointer table, index table) for the full and the partial tiles.
_NAMES: dict[str, tuple[str, str]] = {"rows": ("row_ptr", "col_idx"), "columns": ("col_ptr", "row_idx")}
#: A line with more tiles than this times the median line is scheduled ahead of every head.
LONG_FACTOR = 2.0
#: A long line is cut into chunks of this many times the typical line's tiles (at least one tile);
#: 0 runs long lines whole (for comparisons: bench_triton.py --chunk-factor 0).
CHUNK_FACTOR = 2.0
#: Fixed chunk size in tiles instead of CHUNK_FACTOR × the typical line (None: the factor); tests set it.
CHUNK_TILES: int | None = None


def chunking() -> tuple[float, float, int | None]:
    """The current chunking settings, part of every table key (tests change them)."""
    return LONG_FACTOR, CHUNK_FACTOR, CHUNK_TILES


@dataclass(frozen=True)
class WalkTables:
    """int32 tables for one walk over one tile shape: pointers, indices and the program order."""

    lines: int
    long_lines: int
    #: Lines in `order`: every line, or those of a rectangular call's window.
    programs: int
    order: torch.Tensor
    full_ptr: torch.Tensor
    full_idx: torch.Tensor
    partial_ptr: torch.Tensor
    partial_idx: torch.Tensor
    #: Chunks of the long lines (0: the long lines run whole), and each chunk's tile count.
    chunks: int = 0
    chunk_tiles: int = 0
    #: Per chunk: the line and the first position in its tile list; per long line (in `order`), its
    #: first chunk (long_lines + 1 entries). None when there are no chunks.
    chunk_line: torch.Tensor | None = None
    chunk_start: torch.Tensor | None = None
    chunk_ptr: torch.Tensor | None = None

    @property
    def split(self) -> bool:
        """Whether the long lines run as chunks."""
        return self.chunks > 0


def _concatenate(splits: Sequence[dict[str, np.ndarray]], pointer: str, index: str) -> tuple[np.ndarray, np.ndarray]:
    pointers, indices, base = [], [], 0
    for split in splits:
        pointers.append(split[pointer].astype(np.int64) + base)
        indices.append(split[index])
        base += len(split[index])
    if base >= 2**31:
        raise OverflowError(f"{base} stored tiles do not fit int32 table offsets")
    return np.concatenate(pointers).astype(np.int32), np.concatenate(indices).astype(np.int32)


def _windowed(split: dict[str, np.ndarray], pointer: str, index: str, window: Window) -> dict[str, np.ndarray]:
    """The split's tables of one walk with only the tiles inside `window`."""
    (line_lo, line_hi), (cross_lo, cross_hi) = window
    out = {}
    for kind in ("full", "partial"):
        pointers, indices = split[f"{kind}_{pointer}"], split[f"{kind}_{index}"]
        owner = np.repeat(np.arange(len(pointers) - 1), np.diff(pointers))
        keep = (owner >= line_lo) & (owner < line_hi) & (indices >= cross_lo) & (indices < cross_hi)
        counts = np.bincount(owner[keep], minlength=len(pointers) - 1)
        out[f"{kind}_{pointer}"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        out[f"{kind}_{index}"] = indices[keep]
    return out


#: Each layout's split() tables, kept while the layout lives: rectangular calls (a decoding step
#: each) cut their windows from them instead of splitting the layout again.
_SPLITS: weakref.WeakKeyDictionary[BlockLayout, dict[str, np.ndarray]] = weakref.WeakKeyDictionary()


def _split(layout: BlockLayout) -> dict[str, np.ndarray]:
    if layout not in _SPLITS:
        _SPLITS[layout] = layout.split()
    return _SPLITS[layout]


def walk_arrays(layouts: Sequence[BlockLayout], walk: Walk, window: Window | None = None) -> dict[str, np.ndarray]:
    """The host arrays of `WalkTables`: order and its long-line count, full and partial pointers and indices."""
    pointer, index = _NAMES[walk]
    splits = [_split(layout) for layout in layouts]
    if window is not None:
        splits = [_windowed(split, pointer, index, window) for split in splits]
    full_ptr, full_idx = _concatenate(splits, f"full_{pointer}", f"full_{index}")
    partial_ptr, partial_idx = _concatenate(splits, f"partial_{pointer}", f"partial_{index}")
    per_layout = np.stack([np.diff(s[f"full_{pointer}"]) + np.diff(s[f"partial_{pointer}"]) for s in splits])
    lengths = per_layout.sum(axis=0)
    order = np.argsort(-lengths, kind="stable").astype(np.int32)
    if window is not None:
        order = order[(order >= window[0][0]) & (order < window[0][1])]
    lengths_in = lengths[order]
    long_lines = np.count_nonzero(lengths_in > LONG_FACTOR * np.median(lengths_in)) if len(order) else 0
    return {
        "order": order,
        "lines": np.asarray([len(lengths)]),
        "long_lines": np.asarray([long_lines]),
        **chunk_arrays(per_layout.max(axis=0)[order], long_lines),
        "full_ptr": full_ptr,
        "full_idx": full_idx,
        "partial_ptr": partial_ptr,
        "partial_idx": partial_idx,
    }


def half_kinds(whole: Sequence[BlockLayout], halves: Sequence[BlockLayout], walk: Walk = "rows") -> np.ndarray:
    """Each partial tile of `walk` over `whole`, in the walk's order (layout by layout, line by line, as
    `walk_arrays` concatenates them): the kinds of its two halves along the walk's lines (rows: its
    top and bottom rows, `halves` on tiles of half the rows; columns: its first and last keys,
    `halves` on tiles of half the keys), 0 empty, 1 partial, 2 full, packed as first | second << 2.
    A full tile is full in both halves, so only partial tiles need them.

    Both layouts are sound (stored tiles hold every active pair, full tiles only active ones), and
    so are the halves' kinds: a half that is empty on `halves` holds no active pair of the tile."""
    pointer, index = _NAMES[walk]
    codes = [np.zeros(0, dtype=np.int8)]
    for big, small in zip(whole, halves, strict=True):
        split = _split(big)
        pointers, crossing = split[f"partial_{pointer}"], split[f"partial_{index}"].astype(np.int64)
        line = np.repeat(np.arange(len(pointers) - 1, dtype=np.int64), np.diff(pointers))
        if walk == "rows":
            first, second = _stored_kinds(small, 2 * line, crossing), _stored_kinds(small, 2 * line + 1, crossing)
        else:
            first, second = _stored_kinds(small, crossing, 2 * line), _stored_kinds(small, crossing, 2 * line + 1)
        codes.append((first | (second << 2)).astype(np.int8))
    return np.concatenate(codes)


def _stored_kinds(layout: BlockLayout, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """The kinds of `layout`'s tiles at (rows, columns) (0 outside its grid: the second half of a last
    tile that the grid ends inside), by a sorted search of its stored tiles: memory grows with the
    stored tiles, not with the grid."""
    split, width = _split(layout), layout.grid.col_tiles
    kinds = np.zeros(len(rows), dtype=np.int64)
    wanted = np.where((rows < layout.grid.row_tiles) & (columns < width), rows * width + columns, -1)
    for kind, name in ((2, "full"), (1, "partial")):
        pointers = split[f"{name}_row_ptr"]
        owner = np.repeat(np.arange(len(pointers) - 1, dtype=np.int64), np.diff(pointers))
        stored = owner * width + split[f"{name}_col_idx"].astype(np.int64)  # increasing: rows, then columns
        at = np.searchsorted(stored, wanted)
        found = (at < len(stored)) & (stored[np.minimum(at, len(stored) - 1)] == wanted) if len(stored) else at < 0
        kinds[found] = kind
    return kinds


def typical_line(line_tiles: np.ndarray) -> float:
    """The median tiles of the lines that hold any (0 when none does): what a chunk is sized by.

    Empty lines cost nothing (their programs end at once), so they do not count: a pass over a few
    gathered keys has mostly empty columns, and chunks sized by the median of all of them (0) were
    one tile each, whose partials cost more than the tiles.
    """
    busy = line_tiles[line_tiles > 0]
    return float(np.median(busy)) if len(busy) else 0.0


def chunk_size(line_tiles: np.ndarray) -> int:
    """Tiles per chunk for lines of `line_tiles` tiles (the most of any layout), in `order`."""
    if CHUNK_TILES is not None:
        return CHUNK_TILES
    return max(1, int(np.ceil(CHUNK_FACTOR * typical_line(line_tiles))))


def chunk_arrays(line_tiles: np.ndarray, long_lines: int) -> dict[str, np.ndarray]:
    """The chunks of the first `long_lines` lines in order: chunk_line (a slot in `order`), chunk_start,
    chunk_ptr, and chunk_tiles. Chunking pays only where a line becomes at least two chunks; else none."""
    size = chunk_size(line_tiles) if len(line_tiles) else 1
    counts = -(-line_tiles[:long_lines] // size)
    if long_lines == 0 or counts.max() < 2 or (CHUNK_FACTOR <= 0 and CHUNK_TILES is None):
        counts = np.zeros(0, dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    line = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    start = ((np.arange(ptr[-1]) - ptr[:-1][line]) * size).astype(np.int32)
    return {"chunk_line": line, "chunk_start": start, "chunk_ptr": ptr, "chunk_tiles": np.asarray([size])}


def walk_tables(
    layouts: Sequence[BlockLayout], walk: Walk, device: torch.device, window: Window | None = None
) -> WalkTables:
    """`walk_arrays` as tensors on `device` (index tables padded to one entry so none is empty)."""
    arrays = walk_arrays(layouts, walk, window)

    def tensor(name: str) -> torch.Tensor:
        values = arrays[name]
        if len(values) == 0:
            values = np.zeros(1, dtype=np.int32)
        return torch.as_tensor(values, device=device)

    return WalkTables(
        lines=int(arrays["lines"][0]),
        long_lines=int(arrays["long_lines"][0]),
        programs=len(arrays["order"]),
        order=tensor("order"),
        full_ptr=tensor("full_ptr"),
        full_idx=tensor("full_idx"),
        partial_ptr=tensor("partial_ptr"),
        partial_idx=tensor("partial_idx"),
        **_chunk_tensors(arrays, tensor),
    )


def _chunk_tensors(arrays: dict[str, np.ndarray], tensor) -> dict:
    chunks = len(arrays["chunk_line"])
    if chunks == 0:
        return {}
    return {
        "chunks": chunks,
        "chunk_tiles": int(arrays["chunk_tiles"][0]),
        "chunk_line": tensor("chunk_line"),
        "chunk_start": tensor("chunk_start"),
        "chunk_ptr": tensor("chunk_ptr"),
    }
