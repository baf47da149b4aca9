"""Tile tables from tile kinds: each line's full tiles and partial tiles as sorted index lists.

A run-time layout (documents, top-k, clusters: `backends/triton/runtime.py`) decides each tile's
kind per call on the device: 2 full, 1 partial, 0 empty, in (G, R, C) maps for G tables. A walk
over rows reads lines of the map, a walk over columns reads it transposed (the strides say
which). Its tables are, per kind, pointers (where each line's list starts, global over the G
tables) and indices (the tiles' positions in the line, increasing).

Two passes over the maps. `maskc_count_kinds` counts each line's full and partial tiles, sums
each program's block of lines (per kind) and adds each line's stored tiles to its length over every
table (atomically: the G tables' programs of one line add to one count). `maskc_write_kinds` finds
where its lines' lists start (the totals of the blocks before its own, then a scan inside the
block), writes the lines' pointers and their tiles at their ranks (the line's start plus a running
count along it), and orders the lines longest first: a line's place is the number of lines longer
than it plus the number of earlier lines as long, which is what a stable descending sort gives.
So a build launches two kernels and no scan or sort of its own.

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
def _preceding(totals, before, BLOCK: tl.constexpr):
    # The sum of totals[0 : before), BLOCK at a time.
    total = tl.zeros([BLOCK], tl.int32)
    for start in range(0, before, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        total += tl.load(totals + offs, mask=offs < before, other=0)
    return tl.sum(total, axis=0)


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
    # Stage 3: counts of the full tiles, then (one set further) of the partial ones; after both sets
    # the block's totals per kind (G · blocks each), then the lines' lengths over every table (zeroed
    # by the launcher).
    tl.store(Counts + g * lines + offs_l, full, mask=l_in)
    tl.store(Counts + (groups + g) * lines + offs_l, partial, mask=l_in)
    blocks = tl.cdiv(lines, BLOCK_L)
    totals = Counts + 2 * groups * lines
    tl.store(totals + g * blocks + tl.program_id(1), tl.sum(full, axis=0))
    tl.store(totals + (groups + g) * blocks + tl.program_id(1), tl.sum(partial, axis=0))
    tl.atomic_add(totals + 2 * groups * blocks + offs_l, full + partial, mask=l_in)


@triton.jit
def maskc_write_kinds(
    Kind, Labels, Counts, Pointers, Indices, Order,
    stride_g, stride_line, stride_tile, lines, width, groups, stride_labels, n, size_line, size_tile,
    BLOCK_L: tl.constexpr, BLOCK_W: tl.constexpr, HAS_MAP: tl.constexpr, DOCUMENTS: tl.constexpr,
):
    # Stage 1: the program's lines of table g; where their full and partial lists start: after every
    # earlier block's tiles of that kind (tables in order, blocks in order), then the block's earlier
    # lines'.
    g = tl.program_id(0).to(tl.int64)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    l_in = offs_l < lines
    row_labels = Labels + g * stride_labels
    line_first, line_last = offs_l, offs_l
    if DOCUMENTS:
        line_first, line_last = _span(row_labels, offs_l, size_line, n, l_in)
    blocks = tl.cdiv(lines, BLOCK_L)
    totals = Counts + 2 * groups * lines
    block = g * blocks + tl.program_id(1)
    full_count = tl.load(Counts + g * lines + offs_l, mask=l_in, other=0)
    partial_count = tl.load(Counts + (groups + g) * lines + offs_l, mask=l_in, other=0)
    full_at = _preceding(totals, block, BLOCK_W) + tl.cumsum(full_count, axis=0) - full_count
    partial_at = _preceding(totals + groups * blocks, block, BLOCK_W) + tl.cumsum(partial_count, axis=0) - partial_count
    full_end = full_at + full_count
    partial_end = partial_at + partial_count
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
    # Stage 4 (the first table's programs): each line's place in the programs' order, longest first
    # and earlier first among equals (lengths are never negative, so -1 fills past the last line).
    if tl.program_id(0) == 0:
        lengths_at = totals + 2 * groups * blocks
        length = tl.load(lengths_at + offs_l, mask=l_in, other=0)
        place = tl.zeros([BLOCK_L], tl.int32)
        for start in range(0, lines, BLOCK_W):
            offs_j = start + tl.arange(0, BLOCK_W)
            other = tl.load(lengths_at + offs_j, mask=offs_j < lines, other=-1)
            longer = other[None, :] > length[:, None]
            as_long_before = (other[None, :] == length[:, None]) & (offs_j[None, :] < offs_l[:, None])
            place += tl.sum((longer | as_long_before).to(tl.int32), axis=1)
        tl.store(Order + place, offs_l, mask=l_in)
