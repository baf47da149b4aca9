"""Tile tables from tile kinds: each line's full tiles and partial tiles as sorted index lists.

A run-time layout (documents, top-k, clusters: `backends/triton/runtime.py`) decides each tile's
kind per call on the device: 2 full, 1 partial, 0 empty, in (G, R, C) maps for G tables. A walk
over rows reads lines of the map, a walk over columns reads it transposed (the strides say
which). Its tables are, per kind, pointers (where each line's list starts, global over the G
tables) and indices (the tiles' positions in the line, increasing).

Two passes over the maps: `maskc_count_kinds` counts each line's full and partial tiles; the
launcher turns the counts into the lines' ends with one scan; `maskc_write_kinds` writes every
line's pointers and its tiles at their ranks (the line's start plus a running count along it).

With DOCUMENTS the kinds are not read from a map alone: each tile's kind under "same document" is
found in the pass itself from its line's and its own first and last document numbers (row g of
Labels, tiles of SIZE_LINE and SIZE_TILE positions; `runtime._document_kinds` states why the spans
decide it), and taken with the map's (HAS_MAP: the pattern's static part) by their minimum, the
kinds of an intersection (`maskc.tile_kinds`). "Same document" is symmetric, so a walk over
columns needs nothing but the sizes swapped. A documents call then makes no map of its own.

`backends/triton/compaction.py` launches them.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _span(Labels, tile, size, n, inside):
    # The document numbers of the first and the last position of each tile of `size` (the last tile
    # clipped at n).
    first = tile.to(tl.int64) * size
    last = tl.minimum(first + size, n) - 1
    return tl.load(Labels + first, mask=inside, other=0), tl.load(Labels + last, mask=inside, other=0)


@triton.jit
def _tile_kinds(
    Kind, Labels, g, offs_l, offs_w, inside, line_first, line_last,
    stride_g, stride_line, stride_tile, n, size_tile,
    BLOCK_L: tl.constexpr, BLOCK_W: tl.constexpr, HAS_MAP: tl.constexpr, DOCUMENTS: tl.constexpr,
):
    # Kinds of the [BLOCK_L, BLOCK_W] tiles at lines offs_l and positions offs_w along them.
    kind = tl.full([BLOCK_L, BLOCK_W], 2, tl.int8)
    if HAS_MAP:
        kind = tl.load(
            Kind + g * stride_g + offs_l[:, None].to(tl.int64) * stride_line + offs_w[None, :] * stride_tile,
            mask=inside, other=0,
        )
    if DOCUMENTS:
        tile_first, tile_last = _span(Labels, offs_w, size_tile, n, offs_w < tl.cdiv(n, size_tile))
        meets = (line_first[:, None] <= tile_last[None, :]) & (tile_first[None, :] <= line_last[:, None])
        one = (line_first[:, None] == tile_last[None, :]) & (line_last[:, None] == tile_first[None, :])
        kind = tl.minimum(kind, meets.to(tl.int8) + one.to(tl.int8))
    return tl.where(inside, kind, 0)


@triton.jit
def maskc_count_kinds(
    Kind, Labels, Counts,
    stride_g, stride_line, stride_tile, lines, width, groups, stride_labels, n, size_line, size_tile,
    BLOCK_L: tl.constexpr, BLOCK_W: tl.constexpr, HAS_MAP: tl.constexpr, DOCUMENTS: tl.constexpr,
):
    # Stage 1: the program's lines of table g (with DOCUMENTS, their document spans in row g).
    g = tl.program_id(0).to(tl.int64)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    l_in = offs_l < lines
    row_labels = Labels + g * stride_labels
    line_first, line_last = offs_l, offs_l
    if DOCUMENTS:
        line_first, line_last = _span(row_labels, offs_l, size_line, n, l_in)
    full = tl.zeros([BLOCK_L], tl.int32)
    partial = tl.zeros([BLOCK_L], tl.int32)
    # Stage 2: along the lines, BLOCK_W tiles at a time.
    for start in range(0, width, BLOCK_W):
        offs_w = start + tl.arange(0, BLOCK_W)
        inside = l_in[:, None] & (offs_w < width)[None, :]
        kind = _tile_kinds(
            Kind, row_labels, g, offs_l, offs_w, inside, line_first, line_last,
            stride_g, stride_line, stride_tile, n, size_tile, BLOCK_L, BLOCK_W, HAS_MAP, DOCUMENTS,
        )
        full += tl.sum((kind == 2).to(tl.int32), axis=1)
        partial += tl.sum((kind == 1).to(tl.int32), axis=1)
    # Stage 3: counts of the full tiles, then (one set further) of the partial ones.
    tl.store(Counts + g * lines + offs_l, full, mask=l_in)
    tl.store(Counts + (groups + g) * lines + offs_l, partial, mask=l_in)


@triton.jit
def maskc_write_kinds(
    Kind, Labels, Counts, Ends, Pointers, Indices,
    stride_g, stride_line, stride_tile, lines, width, groups, stride_labels, n, size_line, size_tile,
    BLOCK_L: tl.constexpr, BLOCK_W: tl.constexpr, HAS_MAP: tl.constexpr, DOCUMENTS: tl.constexpr,
):
    # Stage 1: the program's lines of table g; where their full and partial lists start.
    g = tl.program_id(0).to(tl.int64)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    l_in = offs_l < lines
    row_labels = Labels + g * stride_labels
    line_first, line_last = offs_l, offs_l
    if DOCUMENTS:
        line_first, line_last = _span(row_labels, offs_l, size_line, n, l_in)
    full_line = g * lines + offs_l
    partial_line = (groups + g) * lines + offs_l
    full_end = tl.load(Ends + full_line, mask=l_in, other=0)
    partial_end = tl.load(Ends + partial_line, mask=l_in, other=0)
    full_at = full_end - tl.load(Counts + full_line, mask=l_in, other=0)
    partial_at = partial_end - tl.load(Counts + partial_line, mask=l_in, other=0)
    # Stage 2: the pointers of table g: its lines' starts, and after its last line that line's end.
    entries = groups * lines * width
    pointer_set = groups * (lines + 1)
    tl.store(Pointers + g * (lines + 1) + offs_l, full_at, mask=l_in)
    tl.store(Pointers + pointer_set + g * (lines + 1) + offs_l, partial_at, mask=l_in)
    last = offs_l == lines - 1
    tl.store(Pointers + g * (lines + 1) + offs_l + 1, full_end, mask=last)
    tl.store(Pointers + pointer_set + g * (lines + 1) + offs_l + 1, partial_end, mask=last)
    # Stage 3: along the lines, each tile of a kind at its line's running rank for that kind.
    for start in range(0, width, BLOCK_W):
        offs_w = start + tl.arange(0, BLOCK_W)
        inside = l_in[:, None] & (offs_w < width)[None, :]
        kind = _tile_kinds(
            Kind, row_labels, g, offs_l, offs_w, inside, line_first, line_last,
            stride_g, stride_line, stride_tile, n, size_tile, BLOCK_L, BLOCK_W, HAS_MAP, DOCUMENTS,
        )
        is_full = (kind == 2).to(tl.int32)
        is_partial = (kind == 1).to(tl.int32)
        full_rank = full_at[:, None] + tl.cumsum(is_full, axis=1) - is_full
        partial_rank = partial_at[:, None] + tl.cumsum(is_partial, axis=1) - is_partial
        tile = tl.broadcast_to(offs_w[None, :], [BLOCK_L, BLOCK_W])
        tl.store(Indices + full_rank.to(tl.int64), tile, mask=kind == 2)
        tl.store(Indices + entries + partial_rank.to(tl.int64), tile, mask=kind == 1)
        full_at += tl.sum(is_full, axis=1)
        partial_at += tl.sum(is_partial, axis=1)
