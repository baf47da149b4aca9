"""Tile tables from tile kinds: each line's full tiles and partial tiles as sorted index lists.

A run-time layout (documents, top-k, clusters: `backends/triton/runtime.py`) decides each tile's
kind per call on the device: 2 full, 1 partial, 0 empty, in (G, R, C) maps for G tables. A walk
over rows reads lines of the map, a walk over columns reads it transposed (the strides say
which). Its tables are, per kind, pointers (where each line's list starts, global over the G
tables) and indices (the tiles' positions in the line, increasing).

Two passes over the maps: `maskc_count_kinds` counts each line's full and partial tiles; the
launcher turns the counts into the lines' ends with one scan; `maskc_write_kinds` writes every
line's pointers and its tiles at their ranks (the line's start plus a running count along it).

`backends/triton/compaction.py` launches them.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def maskc_count_kinds(
    Kind, Counts,
    stride_g, stride_line, stride_tile, lines, width, groups,
    BLOCK_L: tl.constexpr, BLOCK_W: tl.constexpr,
):
    # Stage 1: the program's lines of table g.
    g = tl.program_id(0).to(tl.int64)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    l_in = offs_l < lines
    full = tl.zeros([BLOCK_L], tl.int32)
    partial = tl.zeros([BLOCK_L], tl.int32)
    # Stage 2: along the lines, BLOCK_W tiles at a time.
    for start in range(0, width, BLOCK_W):
        offs_w = start + tl.arange(0, BLOCK_W)
        inside = l_in[:, None] & (offs_w < width)[None, :]
        kind = tl.load(
            Kind + g * stride_g + offs_l[:, None].to(tl.int64) * stride_line + offs_w[None, :] * stride_tile,
            mask=inside, other=0,
        )
        full += tl.sum((kind == 2).to(tl.int32), axis=1)
        partial += tl.sum((kind == 1).to(tl.int32), axis=1)
    # Stage 3: counts of the full tiles, then (one set further) of the partial ones.
    tl.store(Counts + g * lines + offs_l, full, mask=l_in)
    tl.store(Counts + (groups + g) * lines + offs_l, partial, mask=l_in)


@triton.jit
def maskc_write_kinds(
    Kind, Counts, Ends, Pointers, Indices,
    stride_g, stride_line, stride_tile, lines, width, groups,
    BLOCK_L: tl.constexpr, BLOCK_W: tl.constexpr,
):
    # Stage 1: the program's lines of table g; where their full and partial lists start.
    g = tl.program_id(0).to(tl.int64)
    offs_l = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    l_in = offs_l < lines
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
        kind = tl.load(
            Kind + g * stride_g + offs_l[:, None].to(tl.int64) * stride_line + offs_w[None, :] * stride_tile,
            mask=inside, other=0,
        )
        is_full = (kind == 2).to(tl.int32)
        is_partial = (kind == 1).to(tl.int32)
        full_rank = full_at[:, None] + tl.cumsum(is_full, axis=1) - is_full
        partial_rank = partial_at[:, None] + tl.cumsum(is_partial, axis=1) - is_partial
        tile = tl.broadcast_to(offs_w[None, :], [BLOCK_L, BLOCK_W])
        tl.store(Indices + full_rank.to(tl.int64), tile, mask=inside & (kind == 2))
        tl.store(Indices + entries + partial_rank.to(tl.int64), tile, mask=inside & (kind == 1))
        full_at += tl.sum(is_full, axis=1)
        partial_at += tl.sum(is_partial, axis=1)
