"""Helpers every kernel shares: products, the program → (slot, head) order, tile walks, row prologues.

The pattern's predicate is not here: each kernel takes it as `tile_mask: tl.constexpr` (a
`@triton.jit` function generated from the rules, `codegen.py`) with its arguments as one tuple,
`mask_args`, whose compile-time constants are `tl.constexpr` elements. Triton compiles one
specialisation per predicate and per value of its constants, as if they were written into the
kernel.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

#: log2(e) and ln(2): the kernels work in base 2 (launches fold LOG2E into the score scale).
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    # Triton's interpreter multiplies bfloat16 operands as their raw 16-bit patterns; their
    # float32 values are exact, and products of them accumulate in float32 as on tensor cores.
    @triton.jit
    def mma(a, b, acc, PRECISION: tl.constexpr):
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")

else:

    @triton.jit
    def mma(a, b, acc, PRECISION: tl.constexpr):
        return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def program_slot(pid, long_lines, lines, groups):
    """(slot in the order table, (batch, head) group) of program `pid`.

    The long lines come first, each for every group, so they start early; then each group runs
    its other lines in order, so programs running together share the keys and values of one head
    in L2.
    """
    long_programs = long_lines * groups
    if pid < long_programs:
        slot = pid // groups
        group = pid % groups
    else:
        rest = pid - long_programs
        short = lines - long_lines
        group = rest // short
        slot = long_lines + rest % short
    return slot, group


@triton.jit
def split_slot(pid, chunk_line, chunk_start, chunk_tiles, chunk_programs, long_lines, lines, groups):
    """(slot in the order table, group, [first, last) positions in the line's tile list, is it a chunk)
    of program `pid` when the long lines run as chunks (tables.py).

    The chunk programs come first, chunk by chunk and each for every group, so that they start early;
    then each group runs its other lines whole, in order, as `program_slot` orders them.
    """
    is_chunk = pid < chunk_programs
    chunk = tl.minimum(pid, chunk_programs - 1) // groups
    rest = tl.maximum(pid - chunk_programs, 0)
    short = tl.maximum(lines - long_lines, 1)
    group = tl.where(is_chunk, pid % groups, rest // short)
    slot = tl.where(is_chunk, tl.load(chunk_line + chunk), long_lines + rest % short)
    first = tl.where(is_chunk, tl.load(chunk_start + chunk), 0)
    last = tl.where(is_chunk, first + chunk_tiles, 2147483647)
    return slot, group, first, last, is_chunk


@triton.jit
def item_slot(pid, chunks, long_lines, lines, groups, SPLIT: tl.constexpr):
    """(slot in the order table, group, [first, last) positions in the line's tile list) of program or
    work item `pid`: with SPLIT `split_slot`'s (chunks = (chunk_line, chunk_start, chunk_tiles,
    chunk_programs)); without, `program_slot`'s and the whole line."""
    if SPLIT:
        chunk_line, chunk_start, chunk_tiles, chunk_programs = chunks
        slot, group, first, last, _ = split_slot(pid, chunk_line, chunk_start, chunk_tiles, chunk_programs,
                                                 long_lines, lines, groups)
    else:
        slot, group = program_slot(pid, long_lines, lines, groups)
        first = 0
        last = 2147483647
    return slot, group, first, last


@triton.jit
def walk_parts(full_lo, full_hi, partial_lo, partial_hi, first, last, SPLIT: tl.constexpr):
    """A line's walk (full [lo, hi), partial [lo, hi)) cut to the positions [first, last) of its tile
    list, full tiles then partial ones (a chunk's part, `walk_part`); without SPLIT the whole walk."""
    if SPLIT:
        full_count = full_hi - full_lo
        full_lo, full_hi = walk_part(full_lo, full_hi, first, last)
        partial_lo, partial_hi = walk_part(partial_lo, partial_hi, first - full_count, last - full_count)
    return full_lo, full_hi, partial_lo, partial_hi


@triton.jit
def walk_part(lo, hi, first, last):
    """The part [lo', hi') of a walk tile_idx[lo:hi] at positions [first, last) of it (either may be
    outside the walk)."""
    count = hi - lo
    return lo + tl.minimum(tl.maximum(first, 0), count), lo + tl.minimum(tl.maximum(last, 0), count)


@triton.jit
def head_tables(bh, head_layout, table_of_head, table_stride, layouts, heads, group):
    """(batch, head, its key/value head, layout code, table) of (batch, head) group `bh`.

    The program's tables are those of table index `table_of_head[h] + b · table_stride` (a static
    pattern: its layout; a run-time layout: one per batch element and layout or head); the code
    `layout + layouts · table` tells `tile_mask` both the layout and the table.
    """
    h = bh % heads
    b = bh // heads
    table = tl.load(table_of_head + h) + b * table_stride
    code = tl.load(head_layout + h) + layouts * table
    return b, h, h // group, code, table


@triton.jit
def walking_row_program(row_order, head_layout, table_of_head, table_stride, layouts, long_rows, row_tiles,
                        batch_heads, heads, group, chunk_line, chunk_start, chunk_tiles, chunk_programs,
                        SPLIT: tl.constexpr):
    """(batch, head, its key/value head, batch·heads + head, layout code, table, query tile, positions
    [first, last) in its row's tile list, whether it is a chunk) of a row program (`item_slot`; without
    SPLIT the whole row, never a chunk: the last three are then unused, and compiled away)."""
    pid = tl.program_id(0)
    chunks = (chunk_line, chunk_start, chunk_tiles, chunk_programs)
    slot, bh, first, last = item_slot(pid, chunks, long_rows, row_tiles, batch_heads, SPLIT)
    b, h, kvh, layout, table = head_tables(bh, head_layout, table_of_head, table_stride, layouts, heads, group)
    return b, h, kvh, bh, layout, table, tl.load(row_order + slot), first, last, pid < chunk_programs


@triton.jit
def merge_program(line_order, chunk_ptr, heads, starts, start, length, BLOCK: tl.constexpr, PER_BATCH: tl.constexpr):
    """(group, batch, head, query_rows' four values, first chunk, end chunk) of a merge program: one
    per (long line, group), the line's chunks chunk_ptr[slot] … chunk_ptr[slot + 1] − 1."""
    slot = tl.program_id(0)
    g = tl.program_id(1)
    b = g // heads
    lo, first_row, offs, rows_in = query_rows(starts, start, length, b, tl.load(line_order + slot), BLOCK, PER_BATCH)
    return g, b, g % heads, lo, first_row, offs, rows_in, tl.load(chunk_ptr + slot), tl.load(chunk_ptr + slot + 1)


@triton.jit
def chunk_rows(Work, chunk, BLOCK: tl.constexpr, WIDTH: tl.constexpr):
    """Pointers to chunk program `chunk`'s [BLOCK, WIDTH] float32 partial in a chunk workspace."""
    return chunk_columns(Work, chunk, 0, BLOCK, WIDTH, WIDTH)


@triton.jit
def chunk_columns(Work, chunk, first, BLOCK: tl.constexpr, WIDTH: tl.constexpr, COLUMNS: tl.constexpr):
    """Pointers to columns first … first + COLUMNS − 1 of chunk program `chunk`'s [BLOCK, WIDTH]
    partial: a merge program sums one slice of a line's columns (`chunks.merge_columns`)."""
    rows = chunk.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return Work + rows[:, None] * WIDTH + first + tl.arange(0, COLUMNS)[None, :]


@triton.jit
def tile_start(tile_idx, t, hi, BLOCK: tl.constexpr):
    """First position of the t-th tile of a walk (0 past its end, hi).

    Walkers read the next tile's index one step ahead, into a value carried by the loop: the
    software pipeliner then leaves that load alone and pipelines the tile loads behind it. Read
    within the step that uses it, the index went through the asynchronous copy pipeline itself,
    and every step waited for all copies in flight (no overlap of loads with products).
    """
    return tl.load(tile_idx + t, mask=t < hi, other=0) * BLOCK


@triton.jit
def rows_by_position(X, b, h, stride_b, stride_h, stride_row, lo):
    """Pointer to (batch b, head h) of X moved back by `lo` rows, so that the row of position p is at
    p · stride_row: a rectangular call's tensors hold the positions [lo, lo + len) (lo = 0 for a full
    call). 64-bit offsets, as a tensor may pass 2**31 elements."""
    return X + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h - tl.cast(lo, tl.int64) * stride_row


@triton.jit
def query_rows(q_starts, q_start, q_len, b, row, BLOCK_M: tl.constexpr, PER_BATCH_Q: tl.constexpr):
    """(q_lo, start_m, offs_q, rows_in) of query tile `row`: the call's first query position (per batch
    element when PER_BATCH_Q), the tile's first position, its positions, and which are the call's."""
    q_lo = tl.load(q_starts + b) if PER_BATCH_Q else q_start
    start_m = row * BLOCK_M
    offs_q = start_m + tl.arange(0, BLOCK_M)
    return q_lo, start_m, offs_q, (offs_q >= q_lo) & (offs_q < q_lo + q_len)


@triton.jit
def descriptor_row(b, h, stride_b, stride_h, lo, DIM: tl.constexpr):
    """With a tensor descriptor over a tensor's rows (descriptors.py), the row of position p of
    (batch b, head h) is this + p, the call's tensor holding positions lo …"""
    return (b * (stride_b // DIM) + h * (stride_h // DIM) - lo).to(tl.int32)


@triton.jit
def descriptor_rows(b, h, stride_ab, stride_ah, stride_bb, stride_bh, lo, A_DIM: tl.constexpr, B_DIM: tl.constexpr):
    """`descriptor_row` of tensors A and B (keys and values, or queries and dO)."""
    return descriptor_row(b, h, stride_ab, stride_ah, lo, A_DIM), descriptor_row(b, h, stride_bb, stride_bh, lo, B_DIM)


@triton.jit
def mapped_rows(pos, ROWS):
    """The rows positions `pos` read: the positions themselves (token order: ROWS[0] == 0), or, for a
    pass whose order is a reordering of axes (maskc.schedule.axes `row_map`), Σ_j ((pos // div_j) mod size_j)
    · step_j over ROWS's six (div, size, step) triples, fastest digit first, size 0 unused. Divisors and
    sizes are compile-time constants: no division instruction (multiplications and shifts)."""
    if ROWS[0] == 0:
        rows = pos
    else:
        rows = (pos // ROWS[0]) % ROWS[1] * ROWS[2]
        for j in tl.static_range(1, 6):
            if ROWS[3 * j + 1] != 0:
                rows += (pos // ROWS[3 * j]) % ROWS[3 * j + 1] * ROWS[3 * j + 2]
    return rows


@triton.jit
def shifted(tile, pos, stride, ROWS):
    """Pointers `tile` ([rows, columns], row r at r · stride) of the rows at positions `pos` moved to the
    rows those positions read under ROWS (`mapped_rows`); unchanged in token order."""
    if ROWS[0] == 0:  # noqa: SIM108  (a branch Triton compiles only when taken)
        moved = tile
    else:
        moved = tile + (mapped_rows(pos, ROWS) - pos).to(tl.int64)[:, None] * stride
    return moved


@triton.jit
def load_tile_pair(a_head, b_head, a_local, b_local, stride_a, stride_b, ADesc, BDesc, a_row, b_row,
                   start, offs, lo, hi, ROWS, EVEN: tl.constexpr, TMA: tl.constexpr):
    """The tiles of rows at positions start … of A and B (keys and values, or queries and dO): through
    the descriptors (whole-tile calls in token order), or by pointers to the rows the positions read
    (ROWS), rows outside the call's [lo, hi) as zeros."""
    if TMA:
        a = ADesc.load([a_row + start, 0])
        b = BDesc.load([b_row + start, 0])
    else:
        rows = start + offs
        rows_in = (rows >= lo) & (rows < hi)
        a = load_rows(shifted(a_head + start.to(tl.int64) * stride_a + a_local, rows, stride_a, ROWS), rows_in, EVEN)
        b = load_rows(shifted(b_head + start.to(tl.int64) * stride_b + b_local, rows, stride_b, ROWS), rows_in, EVEN)
    return a, b


@triton.jit
def load_rows(tile, rows_in, EVEN: tl.constexpr):
    """A [rows, columns] tile, rows outside `rows_in` as zeros (no mask when every row is in)."""
    return tl.load(tile) if EVEN else tl.load(tile, mask=rows_in[:, None], other=0.0)
