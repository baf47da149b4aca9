"""Backward pass: dK/dV walking the IR's block-CSC, dQ walking its block-CSR, full tiles first.

A preparation kernel computes, per query row, delta = rowsum(dO ∘ O) − dlse and the lse in base 2
(−inf, a row with no key, becomes +inf so that its probabilities are exactly zero everywhere).
The dK/dV kernel gives one program a key tile of one (batch, key/value head); it loops over the
query heads of its group (grouped-query attention: each may have its own layout) and, for each,
over the query tiles of the key tile's column, full ones unmasked, then partial ones through the
pattern's predicate, called on transposed [BLOCK_N, BLOCK_M] tiles. dK and dV stay in registers
and are written once: no atomics. The dQ kernel mirrors the forward pass over rows. Two kernels
rather than one launch of both kinds of program: each then has its own tile shape and warps
(bench/NOTES.md has the measurements). Long columns and rows run first, as in the forward pass;
with SPLIT they run as chunks (tables.py), each writing its unscaled float32 partial dK, dV or dQ
to a workspace, and `maskc_sum_chunks` sums a long line's partials: dQ of a row and dK, dV of a
column are sums over their tiles (given the merged lse and delta), so the split is exact.
With ATOMIC_DQ the dK/dV kernel also computes each tile's dQ = dS K (the product the dQ kernel
would recompute QKᵀ and dO Vᵀ for) and adds it to a float32 accumulator with atomics, as
FlashAttention-2 does (with TMA_DQ by one bulk reduction of the tile through a tensor descriptor,
as FlashAttention-3 does): five products per tile pair instead of seven, the dQ kernel not launched,
the order of the float32 additions not fixed (`tuning.py` leaves these candidates out when torch
asks for deterministic algorithms).

`backends/triton/backward.py` launches them: the preparation kernel PREPARE_ROWS rows per program,
dK/dV and dQ with the candidates of `tuning.py`, timed per problem.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import (
    LOG2E,
    chunk_columns,
    chunk_rows,
    descriptor_row,
    descriptor_rows,
    item_slot,
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

#: Rows per program of the preparation kernel.
PREPARE_ROWS = 64


@triton.jit
def maskc_backward_prepare(
    Out, DOut, DLse, Lse, Delta, Lse2,
    stride_ob, stride_oh, stride_om, stride_db, stride_dh, stride_dm,
    n_ctx, heads,
    BLOCK_M: tl.constexpr, VALUE_DIM: tl.constexpr, HAS_DLSE: tl.constexpr,
):
    bh = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    offs_q = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = tl.arange(0, VALUE_DIM)
    row_in = offs_q < n_ctx
    rows = offs_q.to(tl.int64)[:, None]
    o = tl.load(Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + rows * stride_om + offs_v[None, :],
                mask=row_in[:, None], other=0.0)
    do = tl.load(DOut + b.to(tl.int64) * stride_db + h.to(tl.int64) * stride_dh + rows * stride_dm
                 + offs_v[None, :], mask=row_in[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    row_at = bh.to(tl.int64) * n_ctx + offs_q
    if HAS_DLSE:
        delta -= tl.load(DLse + row_at, mask=row_in, other=0.0)
    lse = tl.load(Lse + row_at, mask=row_in, other=0.0)
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * LOG2E)
    tl.store(Delta + row_at, delta, mask=row_in)
    tl.store(Lse2 + row_at, lse2, mask=row_in)


@triton.jit
def dkdv_tile(dk, dv, k, v, q, do, Lse2, Delta, offs_q, offs_k, start_m, start_n, layout, n_ctx, q_lo, q_hi, qk_scale,
              tile_mask: tl.constexpr, mask_args, q_map,
              MASKED: tl.constexpr, EVEN_N: tl.constexpr, PRECISION: tl.constexpr):
    # -- the rows' lse and delta (at the rows the positions map to): rows outside [q_lo, q_hi) are
    # not the call's --
    q_in = (offs_q >= q_lo) & (offs_q < q_hi)
    q_at = mapped_rows(offs_q, q_map)
    if EVEN_N:
        lse2 = tl.load(Lse2 + q_at)
        delta = tl.load(Delta + q_at)
    else:
        lse2 = tl.load(Lse2 + q_at, mask=q_in, other=float("inf"))
        delta = tl.load(Delta + q_at, mask=q_in, other=0.0)
    # -- P^T from the saved lse, masked by the predicate on partial tiles only --
    qk_t = mma(k, tl.trans(q), None, PRECISION)
    p_t = tl.math.exp2(qk_t * qk_scale - lse2[None, :])
    if MASKED:
        keep = tile_mask(offs_q[None, :], offs_k[:, None], layout, n_ctx, mask_args, start_m, start_n, True)
        p_t = tl.where(keep, p_t, 0.0)
    # -- dV += P^T dO; dK += dS^T Q with dS = P ∘ (dP − delta) --
    dv = mma(p_t.to(do.dtype), do, dv, PRECISION)
    dp_t = mma(v, tl.trans(do), None, PRECISION)
    ds_t = (p_t * (dp_t - delta[None, :])).to(q.dtype)
    dk = mma(ds_t, q, dk, PRECISION)
    return dk, dv, ds_t


@triton.jit
def add_tile_dq(ds_t, k, dq_tile, DQDesc, dq_row, offs_q, q_lo, q_hi,
                EVEN_N: tl.constexpr, PRECISION: tl.constexpr, TMA_DQ: tl.constexpr):
    # (dq_tile: the pointers of the rows offs_q map to; TMA_DQ only in token order)
    # This tile's dQ = dS K added to the rows' float32 accumulator: by one bulk reduction through
    # the accumulator's descriptor (TMA_DQ: whole-tile calls on Hopper), else by relaxed atomics.
    dq = mma(tl.trans(ds_t), k, None, PRECISION)
    if TMA_DQ:
        DQDesc.atomic_add([dq_row, 0], dq)
    elif EVEN_N:
        tl.atomic_add(dq_tile, dq, sem="relaxed")
    else:
        q_in = (offs_q >= q_lo) & (offs_q < q_hi)
        tl.atomic_add(dq_tile, dq, mask=q_in[:, None], sem="relaxed")


@triton.jit
def dkdv_tiles(dk, dv, k, v, q_head, do_head, q_local, do_local, stride_qm, stride_dm, QDesc, DODesc, q_row, do_row,
               lse2_head, delta_head, dq_head, dq_local, stride_dqm, DQDesc, dq_row,
               tile_idx, lo, hi, offs_m, offs_k, start_n, layout, n_ctx, q_lo, q_hi, qk_scale,
               tile_mask: tl.constexpr, mask_args, q_map,
               BLOCK_M: tl.constexpr, MASKED: tl.constexpr, EVEN_N: tl.constexpr, PRECISION: tl.constexpr,
               TMA: tl.constexpr, ATOMIC_DQ: tl.constexpr, TMA_DQ: tl.constexpr):
    # Add the dK and dV contributions of the query tiles tile_idx[lo:hi] of one key column.
    start_m = tile_start(tile_idx, lo, hi, BLOCK_M)
    for t in range(lo, hi):
        next_m = tile_start(tile_idx, t + 1, hi, BLOCK_M)
        # -- load Q and dO: rows outside [q_lo, q_hi) are not the call's --
        q, do = load_tile_pair(q_head, do_head, q_local, do_local, stride_qm, stride_dm, QDesc, DODesc, q_row, do_row,
                               start_m, offs_m, q_lo, q_hi, q_map, EVEN_N, TMA)
        dk, dv, ds_t = dkdv_tile(
            dk, dv, k, v, q, do, lse2_head, delta_head,
            start_m + offs_m, offs_k, start_m, start_n, layout, n_ctx, q_lo, q_hi, qk_scale, tile_mask, mask_args,
            q_map, MASKED, EVEN_N, PRECISION,
        )
        if ATOMIC_DQ:
            dq_tile = shifted(dq_head + start_m.to(tl.int64) * stride_dqm + dq_local, start_m + offs_m, stride_dqm,
                              q_map)
            add_tile_dq(ds_t, k, dq_tile, DQDesc, dq_row + start_m,
                        start_m + offs_m, q_lo, q_hi, EVEN_N, PRECISION, TMA_DQ)
        start_m = next_m
    return dk, dv


@triton.jit
def maskc_backward_dkdv(
    Q, K, V, DOut, DK, DV, Lse2, Delta,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_db, stride_dh, stride_dm,
    stride_dkb, stride_dkh, stride_dkn,
    stride_dvb, stride_dvh, stride_dvn,
    head_layout, table_of_head, table_stride, layouts, col_order, full_ptr, full_idx, partial_ptr, partial_idx,
    qk_scale, sm_scale, n_ctx, heads, batch_kv_heads, kv_heads, col_tiles, long_cols, programs,
    q_starts, q_start, q_len, k_lo, k_hi, tile_mask: tl.constexpr, mask_args, q_map, k_map,
    chunk_line, chunk_start, chunk_tiles, chunk_programs, DKWork, DVWork, QDesc, DODesc, DQAcc, stride_ab, stride_ah,
    DQDesc,
    GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr,
    EVEN_N: tl.constexpr, PER_BATCH_Q: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    TMA: tl.constexpr, ATOMIC_DQ: tl.constexpr, TMA_DQ: tl.constexpr, ACCUMULATE: tl.constexpr,
):
    # Stage 1: the program's (batch, key/value head) and key tile; K and V stay in registers.
    # Rows are addressed by position, as in the forward kernel: the base pointers below are
    # moved back by the first position of the call's queries (q_lo) and keys (k_lo); a pass in an
    # order of axes reads and writes the rows its positions map to (q_map, k_map).
    chunks = (chunk_line, chunk_start, chunk_tiles, chunk_programs)
    slot, bkv, first, last = item_slot(tl.program_id(0), chunks, long_cols, programs, batch_kv_heads, SPLIT)
    is_chunk = tl.program_id(0) < chunk_programs  # read with SPLIT only
    b = bkv // kv_heads
    kvh = bkv % kv_heads
    col = tl.load(col_order + slot)
    start_n = col * BLOCK_N
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_v = tl.arange(0, VALUE_DIM)
    offs_k = start_n + offs_n
    q_lo = tl.load(q_starts + b) if PER_BATCH_Q else q_start
    local_n = (start_n - k_lo).to(tl.int64)
    k_rows = K + b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh + local_n * stride_kn
    v_rows = V + b.to(tl.int64) * stride_vb + kvh.to(tl.int64) * stride_vh + local_n * stride_vn
    k_in = (offs_k >= k_lo) & (offs_k < k_hi)
    k_tile = shifted(k_rows + offs_n[:, None] * stride_kn + offs_d[None, :], offs_k, stride_kn, k_map)
    v_tile = shifted(v_rows + offs_n[:, None] * stride_vn + offs_v[None, :], offs_k, stride_vn, k_map)
    k = load_rows(k_tile, k_in, EVEN_N)
    v = load_rows(v_tile, k_in, EVEN_N)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dv = tl.zeros([BLOCK_N, VALUE_DIM], tl.float32)
    q_local = offs_m[:, None] * stride_qm + offs_d[None, :]
    do_local = offs_m[:, None] * stride_dm + offs_v[None, :]
    dq_local = offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    # Stage 2: each query head of the group, its column's full tiles, then its partial ones.
    for g in range(0, GROUP):
        h = kvh * GROUP + g
        table = tl.load(table_of_head + h) + b * table_stride
        layout = tl.load(head_layout + h) + layouts * table
        q_head = rows_by_position(Q, b, h, stride_qb, stride_qh, stride_qm, q_lo)
        do_head = rows_by_position(DOut, b, h, stride_db, stride_dh, stride_dm, q_lo)
        q_row, do_row = descriptor_rows(b, h, stride_qb, stride_qh, stride_db, stride_dh, q_lo, HEAD_DIM, VALUE_DIM)
        # DQAcc: (batch, heads, q_len, HEAD_DIM) float32, rows HEAD_DIM apart; None without ATOMIC_DQ
        if ATOMIC_DQ:  # noqa: SIM108  (a branch Triton compiles only when taken)
            dq_head = rows_by_position(DQAcc, b, h, stride_ab, stride_ah, HEAD_DIM, q_lo)
        else:
            dq_head = Lse2
        dq_row = descriptor_row(b, h, stride_ab, stride_ah, q_lo, HEAD_DIM)  # the accumulator's, with TMA_DQ
        rows_at = (b * heads + h).to(tl.int64) * q_len - tl.cast(q_lo, tl.int64)
        at = table * (col_tiles + 1) + col
        full_lo = tl.load(full_ptr + at)
        full_hi = tl.load(full_ptr + at + 1)
        if SPLIT:
            full_count = full_hi - full_lo
            full_lo, full_hi = walk_part(full_lo, full_hi, first, last)
        dk, dv = dkdv_tiles(
            dk, dv, k, v, q_head, do_head, q_local, do_local, stride_qm, stride_dm, QDesc, DODesc, q_row, do_row,
            Lse2 + rows_at, Delta + rows_at, dq_head, dq_local, HEAD_DIM, DQDesc, dq_row,
            full_idx, full_lo, full_hi,
            offs_m, offs_k, start_n, layout, n_ctx, q_lo, q_lo + q_len, qk_scale, tile_mask, mask_args, q_map,
            BLOCK_M, False, EVEN_N, PRECISION, TMA, ATOMIC_DQ, TMA_DQ,
        )
        partial_lo = tl.load(partial_ptr + at)
        partial_hi = tl.load(partial_ptr + at + 1)
        if SPLIT:
            partial_lo, partial_hi = walk_part(partial_lo, partial_hi, first - full_count, last - full_count)
        dk, dv = dkdv_tiles(
            dk, dv, k, v, q_head, do_head, q_local, do_local, stride_qm, stride_dm, QDesc, DODesc, q_row, do_row,
            Lse2 + rows_at, Delta + rows_at, dq_head, dq_local, HEAD_DIM, DQDesc, dq_row,
            partial_idx, partial_lo, partial_hi,
            offs_m, offs_k, start_n, layout, n_ctx, q_lo, q_lo + q_len, qk_scale, tile_mask, mask_args, q_map,
            BLOCK_M, True, EVEN_N, PRECISION, TMA, ATOMIC_DQ, TMA_DQ,
        )
    # Stage 3: write dK (scaled) and dV once, or, for a chunk, keep the partials for the sum.
    if SPLIT:
        if is_chunk:
            tl.store(chunk_rows(DKWork, tl.program_id(0), BLOCK_N, HEAD_DIM), dk)
            tl.store(chunk_rows(DVWork, tl.program_id(0), BLOCK_N, VALUE_DIM), dv)
        else:
            store_rows(DK, dk, b, kvh, local_n, offs_k, k_in, sm_scale, stride_dkb, stride_dkh, stride_dkn, k_map,
                       BLOCK_N, HEAD_DIM, ACCUMULATE)
            store_rows(DV, dv, b, kvh, local_n, offs_k, k_in, 1.0, stride_dvb, stride_dvh, stride_dvn, k_map,
                       BLOCK_N, VALUE_DIM, ACCUMULATE)
    else:
        dk_rows = DK + b.to(tl.int64) * stride_dkb + kvh.to(tl.int64) * stride_dkh + local_n * stride_dkn
        dv_rows = DV + b.to(tl.int64) * stride_dvb + kvh.to(tl.int64) * stride_dvh + local_n * stride_dvn
        dk_tile = shifted(dk_rows + offs_n[:, None] * stride_dkn + offs_d[None, :], offs_k, stride_dkn, k_map)
        dv_tile = shifted(dv_rows + offs_n[:, None] * stride_dvn + offs_v[None, :], offs_k, stride_dvn, k_map)
        dk = dk * sm_scale
        if ACCUMULATE:  # a later pass of a schedule adds its share
            dk += tl.load(dk_tile, mask=k_in[:, None], other=0.0).to(tl.float32)
            dv += tl.load(dv_tile, mask=k_in[:, None], other=0.0).to(tl.float32)
        tl.store(dk_tile, dk.to(DK.dtype.element_ty), mask=k_in[:, None])
        tl.store(dv_tile, dv.to(DV.dtype.element_ty), mask=k_in[:, None])


@triton.jit
def dq_tile(dq, q, do, lse2, delta, k, v, offs_q, offs_k, start_m, start_n, layout, n_ctx, qk_scale,
            tile_mask: tl.constexpr, mask_args, MASKED: tl.constexpr, PRECISION: tl.constexpr):
    # -- P from the saved lse, masked by the predicate on partial tiles only --
    qk = mma(q, tl.trans(k), None, PRECISION)
    p = tl.math.exp2(qk * qk_scale - lse2[:, None])
    if MASKED:
        keep = tile_mask(offs_q[:, None], offs_k[None, :], layout, n_ctx, mask_args, start_m, start_n, True)
        p = tl.where(keep, p, 0.0)
    # -- dQ += dS K with dS = P ∘ (dO V^T − delta) --
    dp = mma(do, tl.trans(v), None, PRECISION)
    ds = p * (dp - delta[:, None])
    dq = mma(ds.to(k.dtype), k, dq, PRECISION)
    return dq


@triton.jit
def dq_tiles(dq, q, do, lse2, delta, k_head, v_head, k_local, v_local, stride_kn, stride_vn, KDesc, VDesc, k_row, v_row,
             tile_idx, lo, hi, offs_q, start_m, offs_n, layout, n_ctx, k_lo, k_hi, qk_scale,
             tile_mask: tl.constexpr, mask_args, k_map,
             BLOCK_N: tl.constexpr, MASKED: tl.constexpr, EVEN_N: tl.constexpr, PRECISION: tl.constexpr,
             TMA: tl.constexpr):
    # Add the dQ contributions of the key tiles tile_idx[lo:hi] of one query row.
    start_n = tile_start(tile_idx, lo, hi, BLOCK_N)
    for t in range(lo, hi):
        next_n = tile_start(tile_idx, t + 1, hi, BLOCK_N)
        k, v = load_tile_pair(k_head, v_head, k_local, v_local, stride_kn, stride_vn, KDesc, VDesc, k_row, v_row,
                             start_n, offs_n, k_lo, k_hi, k_map, EVEN_N, TMA)
        dq = dq_tile(
            dq, q, do, lse2, delta, k, v,
            offs_q, start_n + offs_n, start_m, start_n, layout, n_ctx, qk_scale, tile_mask, mask_args, MASKED,
            PRECISION,
        )
        start_n = next_n
    return dq


@triton.jit
def maskc_backward_dq(
    Q, K, V, DOut, DQ, Lse2, Delta,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_db, stride_dh, stride_dm,
    stride_dqb, stride_dqh, stride_dqm,
    head_layout, table_of_head, table_stride, layouts, row_order, full_ptr, full_idx, partial_ptr, partial_idx,
    qk_scale, sm_scale, n_ctx, heads, group, batch_heads, row_tiles, long_rows, programs,
    q_starts, q_start, q_len, k_lo, k_hi, tile_mask: tl.constexpr, mask_args, q_map, k_map,
    chunk_line, chunk_start, chunk_tiles, chunk_programs, DQWork, KDesc, VDesc,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr,
    EVEN_N: tl.constexpr, PER_BATCH_Q: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    TMA: tl.constexpr, ACCUMULATE: tl.constexpr,
):
    # Stage 1: the program's (batch, head) and query tile, as in the forward kernel; Q, dO, lse and
    # delta of its rows stay in registers.
    b, h, kvh, bh, layout, table, row, first, last, is_chunk = walking_row_program(
        row_order, head_layout, table_of_head, table_stride, layouts, long_rows, programs, batch_heads, heads, group,
        chunk_line, chunk_start, chunk_tiles, chunk_programs, SPLIT,
    )
    q_lo, start_m, offs_q, q_in = query_rows(q_starts, q_start, q_len, b, row, BLOCK_M, PER_BATCH_Q)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_v = tl.arange(0, VALUE_DIM)
    local_m = (start_m - q_lo).to(tl.int64)
    q_rows = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + local_m * stride_qm
    do_rows = DOut + b.to(tl.int64) * stride_db + h.to(tl.int64) * stride_dh + local_m * stride_dm
    row_at = bh.to(tl.int64) * q_len + (mapped_rows(offs_q, q_map) - q_lo)
    q_tile = shifted(q_rows + offs_m[:, None] * stride_qm + offs_d[None, :], offs_q, stride_qm, q_map)
    do_tile = shifted(do_rows + offs_m[:, None] * stride_dm + offs_v[None, :], offs_q, stride_dm, q_map)
    q = load_rows(q_tile, q_in, EVEN_N)
    do = load_rows(do_tile, q_in, EVEN_N)
    if EVEN_N:
        lse2 = tl.load(Lse2 + row_at)
        delta = tl.load(Delta + row_at)
    else:
        lse2 = tl.load(Lse2 + row_at, mask=q_in, other=float("inf"))
        delta = tl.load(Delta + row_at, mask=q_in, other=0.0)
    k_head = rows_by_position(K, b, kvh, stride_kb, stride_kh, stride_kn, k_lo)
    v_head = rows_by_position(V, b, kvh, stride_vb, stride_vh, stride_vn, k_lo)
    k_local = offs_n[:, None] * stride_kn + offs_d[None, :]
    v_local = offs_n[:, None] * stride_vn + offs_v[None, :]
    k_row, v_row = descriptor_rows(b, kvh, stride_kb, stride_kh, stride_vb, stride_vh, k_lo, HEAD_DIM, VALUE_DIM)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    at = table * (row_tiles + 1) + row
    full_lo = tl.load(full_ptr + at)
    full_hi = tl.load(full_ptr + at + 1)
    if SPLIT:
        full_count = full_hi - full_lo
        full_lo, full_hi = walk_part(full_lo, full_hi, first, last)
    # Stage 2: the row's full tiles, no predicate; stage 3: its partial tiles, through the predicate.
    dq = dq_tiles(
        dq, q, do, lse2, delta, k_head, v_head, k_local, v_local, stride_kn, stride_vn, KDesc, VDesc, k_row, v_row,
        full_idx, full_lo, full_hi,
        offs_q, start_m, offs_n, layout, n_ctx, k_lo, k_hi, qk_scale, tile_mask, mask_args, k_map,
        BLOCK_N, False, EVEN_N, PRECISION, TMA,
    )
    partial_lo = tl.load(partial_ptr + at)
    partial_hi = tl.load(partial_ptr + at + 1)
    if SPLIT:
        partial_lo, partial_hi = walk_part(partial_lo, partial_hi, first - full_count, last - full_count)
    dq = dq_tiles(
        dq, q, do, lse2, delta, k_head, v_head, k_local, v_local, stride_kn, stride_vn, KDesc, VDesc, k_row, v_row,
        partial_idx, partial_lo, partial_hi,
        offs_q, start_m, offs_n, layout, n_ctx, k_lo, k_hi, qk_scale, tile_mask, mask_args, k_map,
        BLOCK_N, True, EVEN_N, PRECISION, TMA,
    )
    # Stage 4: write dQ (scaled) once, or, for a chunk, keep the partial for the sum.
    if SPLIT:
        if is_chunk:
            tl.store(chunk_rows(DQWork, tl.program_id(0), BLOCK_M, HEAD_DIM), dq)
        else:
            store_rows(DQ, dq, b, h, local_m, offs_q, q_in, sm_scale, stride_dqb, stride_dqh, stride_dqm, q_map,
                       BLOCK_M, HEAD_DIM, ACCUMULATE)
    else:
        store_rows(DQ, dq, b, h, local_m, offs_q, q_in, sm_scale, stride_dqb, stride_dqh, stride_dqm, q_map,
                   BLOCK_M, HEAD_DIM, ACCUMULATE)


@triton.jit
def store_rows(Dst, x, b, h, local, positions, rows_in, scale, stride_b, stride_h, stride_row, ROWS,
               BLOCK: tl.constexpr, WIDTH: tl.constexpr, ACCUMULATE: tl.constexpr):
    # Store scale · x as rows local … local + BLOCK − 1 of (b, h) of Dst (of `positions`, moved to the
    # rows they map to under ROWS), those in `rows_in` only; with ACCUMULATE added to what they hold
    # (a later pass of a schedule adds its share of a gradient).
    rows = Dst + b.to(tl.int64) * stride_b + h.to(tl.int64) * stride_h + local * stride_row
    tile = shifted(rows + tl.arange(0, BLOCK)[:, None] * stride_row + tl.arange(0, WIDTH)[None, :], positions,
                   stride_row, ROWS)
    value = x * scale
    if ACCUMULATE:
        value += tl.load(tile, mask=rows_in[:, None], other=0.0).to(tl.float32)
    tl.store(tile, value.to(Dst.dtype.element_ty), mask=rows_in[:, None])


@triton.jit
def maskc_sum_chunks(
    Dst, Work, stride_b, stride_h, stride_row, scale, Dst2, Work2, stride2_b, stride2_h, stride2_row, scale2,
    line_order, chunk_ptr, heads, groups, starts, start, length, rows_map,
    BLOCK: tl.constexpr, WIDTH: tl.constexpr, WIDTH2: tl.constexpr, COLUMNS: tl.constexpr, PER_BATCH: tl.constexpr,
    ACCUMULATE: tl.constexpr,
):
    # One program per (long line, group, slice of COLUMNS columns of a gradient): the sum of the line's
    # chunk partials in those columns, scaled, stored as the unsplit kernel stores the line (rows of
    # positions [start, start + length) only, per batch element when PER_BATCH). The third grid axis
    # walks Dst's slices, then Dst2's: dK and dV of one launch of chunks in one launch (a launch is
    # host time in every call). Slices, not whole lines, because a line's chunks are summed one after
    # another: one program per line read its tens of partials at a single SM's bandwidth.
    g, b, h, lo, first_row, positions, rows_in, first, end = merge_program(
        line_order, chunk_ptr, heads, starts, start, length, BLOCK, PER_BATCH
    )
    local = (first_row - lo).to(tl.int64)
    part = tl.program_id(2)
    if part < WIDTH // COLUMNS:
        sum_line(Dst, Work, first, end, g, groups, b, h, local, positions, rows_in, scale, stride_b, stride_h,
                 stride_row, rows_map, part * COLUMNS, BLOCK, WIDTH, COLUMNS, ACCUMULATE)
    else:
        sum_line(Dst2, Work2, first, end, g, groups, b, h, local, positions, rows_in, scale2, stride2_b, stride2_h,
                 stride2_row, rows_map, (part - WIDTH // COLUMNS) * COLUMNS, BLOCK, WIDTH2, COLUMNS, ACCUMULATE)


@triton.jit
def sum_line(Dst, Work, first, end, g, groups, b, h, local, positions, rows_in, scale, stride_b, stride_h, stride_row,
             rows_map, column, BLOCK: tl.constexpr, WIDTH: tl.constexpr, COLUMNS: tl.constexpr,
             ACCUMULATE: tl.constexpr):
    # Columns column … column + COLUMNS − 1 of the partials of chunks first … end − 1 of group g summed
    # and stored (store_rows).
    total = tl.zeros([BLOCK, COLUMNS], tl.float32)
    for c in range(first, end):
        total += tl.load(chunk_columns(Work, c * groups + g, column, BLOCK, WIDTH, COLUMNS))
    store_rows(Dst + column, total, b, h, local, positions, rows_in, scale, stride_b, stride_h, stride_row, rows_map,
               BLOCK, COLUMNS, ACCUMULATE)
