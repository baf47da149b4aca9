"""Forward pass: block-sparse flash attention over the IR's block-CSR, full tiles first.

One program owns one query tile of one (batch, head). It walks the row's full tiles with no
masking at all (a bounds mask on the last key tile only when n is not a multiple of BLOCK_N),
then its partial tiles with the pattern's predicate `tile_mask`. Long rows (a global token's)
run first for every head, so that they do not serialize the tail; the others head by head, so
that concurrent programs share a head's keys and values in L2 (`program_slot`, tables.py).
With SPLIT, long rows run as chunks instead (`split_slot`): each chunk program walks its part of
the row's tile list and writes its unnormalised partial (acc, m, l in base 2) to float32
workspaces; `maskc_forward_merge` then combines each long row's partials by log-sum-exp into Out
and Lse exactly. Without SPLIT the kernel is the unsplit one, compiled to the same code.
With TMA (whole-tile calls on Hopper), key and value tiles come through tensor descriptors
(`descriptors.py`), the copy engine's bulk loads, instead of pointer loads. Online softmax in base 2 as in Triton's
fused-attention tutorial; a row that meets no key keeps
m = −inf without producing NaN and ends with zeros and lse = −inf.

`backends/triton/forward.py` launches `maskc_forward`; its tile shapes, warps and stages are the
forward candidates of `tuning.py`, timed per problem.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import (
    LN2,
    LOG2E,
    chunk_columns,
    chunk_rows,
    descriptor_rows,
    load_rows,
    load_tile_pair,
    mapped_rows,
    merge_program,
    mma,
    query_rows,
    rows_by_position,
    shifted,
    tile_start,
    walk_part,
    walking_row_program,
)


@triton.jit
def forward_tile(acc, m_i, l_i, q, k, v, offs_q, offs_k, start_m, start_n, layout, n_ctx, k_lo, k_hi, qk_scale,
                 tile_mask: tl.constexpr, mask_args,
                 MASKED: tl.constexpr, EVEN_N: tl.constexpr, PRECISION: tl.constexpr):
    k_in = (offs_k >= k_lo) & (offs_k < k_hi)
    # -- compute qk, masked by the predicate on partial tiles only --
    qk = mma(q, tl.trans(k), None, PRECISION)
    if MASKED:
        keep = tile_mask(offs_q[:, None], offs_k[None, :], layout, n_ctx, mask_args, start_m, start_n, True)
        if not EVEN_N:
            keep = keep & k_in[None, :]
        qk = tl.where(keep, qk, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_use = tl.where(m_ij == float("-inf"), 0.0, m_ij)
    else:
        if not EVEN_N:
            qk = tl.where(k_in[None, :], qk, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_use = m_ij
    # -- update m_i, l_i and acc (m_use keeps a row with no key so far at exp2(−inf) = 0) --
    p = tl.math.exp2(qk * qk_scale - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = mma(p.to(v.dtype), v, acc, PRECISION)
    return acc, m_ij, l_i


@triton.jit
def forward_tiles(acc, m_i, l_i, q, k_head, v_head, k_local, v_local, stride_kn, stride_vn, KDesc, VDesc, k_row, v_row,
                  tile_idx, lo, hi, offs_q, start_m, offs_n, layout, n_ctx, k_lo, k_hi, qk_scale,
                  tile_mask: tl.constexpr, mask_args, k_map,
                  BLOCK_N: tl.constexpr, MASKED: tl.constexpr, EVEN_N: tl.constexpr, PRECISION: tl.constexpr,
                  TMA: tl.constexpr):
    # Fold the key tiles tile_idx[lo:hi] of one query row into the running softmax.
    start_n = tile_start(tile_idx, lo, hi, BLOCK_N)
    for t in range(lo, hi):
        next_n = tile_start(tile_idx, t + 1, hi, BLOCK_N)
        # -- load K and V: keys are positions; only those in [k_lo, k_hi) are the call's --
        k, v = load_tile_pair(k_head, v_head, k_local, v_local, stride_kn, stride_vn, KDesc, VDesc, k_row, v_row,
                             start_n, offs_n, k_lo, k_hi, k_map, EVEN_N, TMA)
        acc, m_i, l_i = forward_tile(
            acc, m_i, l_i, q, k, v,
            offs_q, start_n + offs_n, start_m, start_n, layout, n_ctx, k_lo, k_hi, qk_scale, tile_mask, mask_args,
            MASKED, EVEN_N, PRECISION,
        )
        start_n = next_n
    return acc, m_i, l_i


@triton.jit
def maskc_forward(
    Q, K, V, Out, Lse,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    head_layout, table_of_head, table_stride, layouts, row_order, full_ptr, full_idx, partial_ptr, partial_idx,
    qk_scale, n_ctx, heads, group, batch_heads, row_tiles, long_rows, programs,
    q_starts, q_start, q_len, k_lo, k_hi, tile_mask: tl.constexpr, mask_args, q_map, k_map,
    chunk_line, chunk_start, chunk_tiles, chunk_programs, AccWork, MWork, LWork, KDesc, VDesc,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr,
    EVEN_N: tl.constexpr, PER_BATCH_Q: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    TMA: tl.constexpr, CONTINUE: tl.constexpr,
):
    # Stage 1: the program's (batch, head), query tile and tables. Rows and keys are addressed by
    # position: query row a of this batch element is position q_lo + a, key row c is position
    # k_lo + c (both 0 in full-length calls); a pass whose order is a reordering of axes reads and
    # writes the rows its positions map to (q_map, k_map: `mapped_rows`), in a full-length call.
    b, h, kvh, bh, layout, table, row, first, last, is_chunk = walking_row_program(
        row_order, head_layout, table_of_head, table_stride, layouts, long_rows, programs, batch_heads, heads, group,
        chunk_line, chunk_start, chunk_tiles, chunk_programs, SPLIT,
    )
    q_lo, start_m, offs_q, row_in = query_rows(q_starts, q_start, q_len, b, row, BLOCK_M, PER_BATCH_Q)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_v = tl.arange(0, VALUE_DIM)
    q_rows = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + (start_m - q_lo).to(tl.int64) * stride_qm
    q = load_rows(shifted(q_rows + offs_m[:, None] * stride_qm + offs_d[None, :], offs_q, stride_qm, q_map), row_in,
                  EVEN_N)
    k_head = rows_by_position(K, b, kvh, stride_kb, stride_kh, stride_kn, k_lo)
    v_head = rows_by_position(V, b, kvh, stride_vb, stride_vh, stride_vn, k_lo)
    k_local = offs_n[:, None] * stride_kn + offs_d[None, :]
    v_local = offs_n[:, None] * stride_vn + offs_v[None, :]
    k_row, v_row = descriptor_rows(b, kvh, stride_kb, stride_kh, stride_vb, stride_vh, k_lo, HEAD_DIM, VALUE_DIM)
    if CONTINUE:
        # a later pass of a schedule: Out and Lse hold the earlier passes' rows, where it goes on
        # (a chunk starts empty: the chunk merge adds them once)
        acc, m_i, l_i = continued_state(Out, Lse, b, h, bh, start_m, q_lo, q_len, offs_q, row_in,
                                        stride_ob, stride_oh, stride_om, q_map, BLOCK_M, VALUE_DIM)
        if SPLIT:
            acc = tl.where(is_chunk, 0.0, acc)
            m_i = tl.where(is_chunk, float("-inf"), m_i)
            l_i = tl.where(is_chunk, 0.0, l_i)
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, VALUE_DIM], tl.float32)
    at = table * (row_tiles + 1) + row
    full_lo = tl.load(full_ptr + at)
    full_hi = tl.load(full_ptr + at + 1)
    if SPLIT:
        full_count = full_hi - full_lo
        full_lo, full_hi = walk_part(full_lo, full_hi, first, last)
    # Stage 2: the row's full tiles, no predicate.
    acc, m_i, l_i = forward_tiles(
        acc, m_i, l_i, q, k_head, v_head, k_local, v_local, stride_kn, stride_vn, KDesc, VDesc, k_row, v_row,
        full_idx, full_lo, full_hi,
        offs_q, start_m, offs_n, layout, n_ctx, k_lo, k_hi, qk_scale, tile_mask, mask_args, k_map,
        BLOCK_N, False, EVEN_N, PRECISION, TMA,
    )
    partial_lo = tl.load(partial_ptr + at)
    partial_hi = tl.load(partial_ptr + at + 1)
    if SPLIT:
        partial_lo, partial_hi = walk_part(partial_lo, partial_hi, first - full_count, last - full_count)
    # Stage 3: its partial tiles, through the predicate.
    acc, m_i, l_i = forward_tiles(
        acc, m_i, l_i, q, k_head, v_head, k_local, v_local, stride_kn, stride_vn, KDesc, VDesc, k_row, v_row,
        partial_idx, partial_lo, partial_hi,
        offs_q, start_m, offs_n, layout, n_ctx, k_lo, k_hi, qk_scale, tile_mask, mask_args, k_map,
        BLOCK_N, True, EVEN_N, PRECISION, TMA,
    )
    # Stage 4: normalise and store, or, for a chunk, keep the partial for the merge.
    if SPLIT:
        if is_chunk:
            chunk = tl.program_id(0)
            tl.store(chunk_rows(AccWork, chunk, BLOCK_M, VALUE_DIM), acc)
            tl.store(MWork + chunk.to(tl.int64) * BLOCK_M + offs_m, m_i)
            tl.store(LWork + chunk.to(tl.int64) * BLOCK_M + offs_m, l_i)
        else:
            finish_rows(Out, Lse, acc, m_i, l_i, b, h, bh, start_m, q_lo, q_len, offs_q, row_in,
                        stride_ob, stride_oh, stride_om, q_map, BLOCK_M, VALUE_DIM)
    else:
        finish_rows(Out, Lse, acc, m_i, l_i, b, h, bh, start_m, q_lo, q_len, offs_q, row_in,
                    stride_ob, stride_oh, stride_om, q_map, BLOCK_M, VALUE_DIM)


@triton.jit
def continued_state(Out, Lse, b, h, bh, start_m, q_lo, q_len, offs_q, row_in, stride_ob, stride_oh, stride_om, q_map,
                    BLOCK_M: tl.constexpr, VALUE_DIM: tl.constexpr):
    # The running state (acc, m, l) of a finished (out, lse), as finish_rows stored it: m = lse in base
    # 2 and l = 1, so that acc / l = out and m + log2 l = the lse; a row with no key yet has m = −inf,
    # l = 0 and acc = 0. Going on from it is exactly going on from the state that made it.
    offs_m = tl.arange(0, BLOCK_M)
    offs_v = tl.arange(0, VALUE_DIM)
    o_rows = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + (start_m - q_lo).to(tl.int64) * stride_om
    o_tile = shifted(o_rows + offs_m[:, None] * stride_om + offs_v[None, :], offs_q, stride_om, q_map)
    acc = tl.load(o_tile, mask=row_in[:, None], other=0.0).to(tl.float32)
    lse = tl.load(Lse + bh.to(tl.int64) * q_len + (mapped_rows(offs_q, q_map) - q_lo), mask=row_in,
                  other=float("-inf"))
    empty = lse == float("-inf")
    return acc, tl.where(empty, float("-inf"), lse * LOG2E), tl.where(empty, 0.0, 1.0)


@triton.jit
def finish_rows(Out, Lse, acc, m_i, l_i, b, h, bh, start_m, q_lo, q_len, offs_q, row_in,
                stride_ob, stride_oh, stride_om, q_map, BLOCK_M: tl.constexpr, VALUE_DIM: tl.constexpr):
    # Normalise and store a query tile's rows (at the rows their positions map to); a row with no
    # key gets zeros and lse = −inf.
    offs_m = tl.arange(0, BLOCK_M)
    offs_v = tl.arange(0, VALUE_DIM)
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * LN2)
    o_rows = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + (start_m - q_lo).to(tl.int64) * stride_om
    o_tile = shifted(o_rows + offs_m[:, None] * stride_om + offs_v[None, :], offs_q, stride_om, q_map)
    tl.store(o_tile, out.to(Out.dtype.element_ty), mask=row_in[:, None])
    tl.store(Lse + bh.to(tl.int64) * q_len + (mapped_rows(offs_q, q_map) - q_lo), lse, mask=row_in)


@triton.jit
def maskc_forward_merge(
    Out, Lse, AccWork, MWork, LWork, stride_ob, stride_oh, stride_om,
    row_order, chunk_ptr, heads, batch_heads, q_starts, q_start, q_len, q_map,
    BLOCK_M: tl.constexpr, VALUE_DIM: tl.constexpr, COLUMNS: tl.constexpr, PER_BATCH_Q: tl.constexpr,
    CONTINUE: tl.constexpr,
):
    # One program per (long row, batch·head, slice of COLUMNS output columns): its chunks' partials
    # (acc, m, l), each relative to its own running maximum m, rescaled to their common maximum and
    # summed: exactly the unsplit row. Every slice's program merges m and l whole and stores the same
    # lse. With CONTINUE the earlier passes' state of the row (continued_state) is one more partial,
    # read from the (out, lse) it then overwrites: one slice (COLUMNS = VALUE_DIM), as another slice's
    # lse store would race its read.
    bh, b, h, q_lo, start_m, offs_q, row_in, first, end = merge_program(
        row_order, chunk_ptr, heads, q_starts, q_start, q_len, BLOCK_M, PER_BATCH_Q
    )
    column = tl.program_id(2) * COLUMNS
    offs_m = tl.arange(0, BLOCK_M)
    if CONTINUE:
        acc_0, m_0, l_0 = continued_state(Out + column, Lse, b, h, bh, start_m, q_lo, q_len, offs_q, row_in,
                                          stride_ob, stride_oh, stride_om, q_map, BLOCK_M, COLUMNS)
        m_i = m_0
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    for c in range(first, end):
        m_i = tl.maximum(m_i, tl.load(MWork + (c * batch_heads + bh).to(tl.int64) * BLOCK_M + offs_m))
    m_use = tl.where(m_i == float("-inf"), 0.0, m_i)
    if CONTINUE:
        scale_0 = tl.math.exp2(m_0 - m_use)
        l_i = l_0 * scale_0
        acc = acc_0 * scale_0[:, None]
    else:
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, COLUMNS], tl.float32)
    for c in range(first, end):
        chunk = c * batch_heads + bh
        scale = tl.math.exp2(tl.load(MWork + chunk.to(tl.int64) * BLOCK_M + offs_m) - m_use)
        l_i += tl.load(LWork + chunk.to(tl.int64) * BLOCK_M + offs_m) * scale
        acc += tl.load(chunk_columns(AccWork, chunk, column, BLOCK_M, VALUE_DIM, COLUMNS)) * scale[:, None]
    finish_rows(Out + column, Lse, acc, m_i, l_i, b, h, bh, start_m, q_lo, q_len, offs_q, row_in,
                stride_ob, stride_oh, stride_om, q_map, BLOCK_M, COLUMNS)
