"""The backward on Hopper, warp-specialised: dQ and dK/dV on the forward's plan (kernels/forward_ws.py).

**dQ** walks the rows as the forward does (`backward.maskc_backward_dq`: per query tile, its key
tiles, full ones without the predicate, partial ones through `tile_mask`), so it takes the forward's
persistent programs, work-item counter and loading partition unchanged, the loader also bringing
each row's dO tile beside its query tile (`issue_loads` with WITH_DO). Two computing partitions
take the 64-row halves of each query tile: per key tile the scores Q Kᵀ and dP = dO Vᵀ (two
warp-group products from shared memory, in flight together), P = exp2(scores · scale − lse), dS =
P ∘ (dP − delta) in registers, and dQ += dS K with dS as the register operand. dQ is scaled and
stored once per row, through the half's dO rows in shared memory by one bulk tensor copy
(`store_rows`). Key tiles of 64: a 128-row query and dO tile pair per slot (two slots) leaves
shared memory for two or three 64-key stages.

**dK/dV** walks the columns (`backward.maskc_backward_dkdv`: per 128-key tile of a key/value head,
each query head of its group, the column's query tiles, full then partial) with the same parts in
turned roles: a work item is a key tile, published beside its key and value tiles (two slots); the
loader (`issue_column_loads`) brings the column's 64-row query and dO tiles into the ring; two
computing partitions take 64 keys each and, per query tile, compute Sᵀ = K Qᵀ and dPᵀ = V dOᵀ,
Pᵀ from the rows' lse, dV += Pᵀ dO and dK += dSᵀ Q (register operands), holding dK and dV (128
registers a thread) until the column's end, when they are stored once (dK scaled), through the
half's key and value rows in shared memory (`store_rows`): no atomics.

With HALF_KINDS both read each partial tile's halves' kinds (`tables.half_kinds`: dQ's halves are
its query rows', dK/dV's its keys'), as the forward does: an empty half waits for the tile, then only
releases it; a full half runs without the predicate.

Long rows (dQ) and long columns (dK/dV) run as chunks where the tables split them, as in the
forward: each chunk keeps its unscaled float32 partials, which the Triton kernels' sum adds after the
launch (`backward._sum_chunks`).

Calls they serve: those of the forward kernel (`forward.ws_eligible`) whose gradients are not added
to an earlier pass's. The tuner times them beside the Triton kernels and keeps the faster.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

from .common import item_slot, walk_parts
from .forward_ws import (
    CONSUMERS,
    GROUP_ROWS,
    buffer_pair,
    copy_rows_out,
    descriptor_rows,
    half_of_row,
    issue_loads,
    keep_rows,
    load_walk,
    next_item,
    product_layout,
    publish_item,
    ring_barriers,
    ring_slot,
    take_item,
)


@gluon.jit
def gradient_rows(args, tile_mask: gl.constexpr, mask_args, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, HALF: gl.constexpr, HALF_KINDS: gl.constexpr,
                  SPLIT: gl.constexpr):
    # A computing partition: dQ of rows [HALF · 64, HALF · 64 + 64) of every query tile the program walks.
    (q_bufs, do_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids, dq_desc, lse2_ptr,
     delta_ptr, stride_dqb, stride_dqh, full_idx, partial_idx, partial_halves, qk_scale, sm_scale, n_ctx, heads,
     items, chunk_items, dq_work) = args
    s_layout: gl.constexpr = product_layout(BLOCK_N)
    dq_layout: gl.constexpr = product_layout(HEAD_DIM)
    ds_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=dq_layout, k_width=2)
    rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    kv_count = 0
    rows_done = 0
    it = take_item(row_ids, q_ready, rows_done)
    while it < items:
        b, h, bh, code, start_m, qb, full_lo, full_hi, partial_lo, partial_hi = half_of_row(
            rows_done, row_ids, heads, BLOCK_M, HALF)
        q = q_bufs.index(qb).slice(HALF * GROUP_ROWS, GROUP_ROWS, dim=0)
        do = do_bufs.index(qb).slice(HALF * GROUP_ROWS, GROUP_ROWS, dim=0)
        offs_q = start_m + gl.arange(0, GROUP_ROWS, layout=rows)
        row_at = bh.to(gl.int64) * n_ctx + offs_q
        lse2 = gl.load(lse2_ptr + row_at)
        delta = gl.load(delta_ptr + row_at)
        dq = gl.zeros([GROUP_ROWS, HEAD_DIM], gl.float32, layout=dq_layout)
        # Stage 1: the row's full tiles, no predicate; Stage 2: its partial tiles, through the predicate.
        dq, kv_count = gradient_tiles(
            q, do, k_bufs, v_bufs, k_ready, v_ready, kv_empty, dq, lse2, delta, kv_count, full_idx, full_lo,
            full_hi, start_m, offs_q, code, n_ctx, qk_scale, tile_mask, mask_args, s_layout, dq_layout, ds_layout,
            BLOCK_N, STAGES, False)
        dq, kv_count = gradient_tiles(
            q, do, k_bufs, v_bufs, k_ready, v_ready, kv_empty, dq, lse2, delta, kv_count, partial_idx, partial_lo,
            partial_hi, start_m, offs_q, code, n_ctx, qk_scale, tile_mask, mask_args, s_layout, dq_layout, ds_layout,
            BLOCK_N, STAGES, True, partial_halves, HALF_KINDS, HALF)
        # Stage 3: dQ scaled, stored once through the half's dO rows (read by no product any more), or,
        # for a long row's chunk, kept unscaled for the sum (kernels/backward.py's); the query and dO
        # tiles' buffers are free once both halves' copies have left them.
        dq_row = b * (stride_dqb // HEAD_DIM) + h * (stride_dqh // HEAD_DIM) + start_m
        if SPLIT:
            if it < chunk_items:
                keep_rows(dq_work, it, dq, dq_layout, BLOCK_M, HALF, HEAD_DIM)
            else:
                store_rows(dq_desc, do, dq * sm_scale, dq_row)
        else:
            store_rows(dq_desc, do, dq * sm_scale, dq_row)
        mbarrier.arrive(q_empty.index(qb), count=1)
        rows_done += 1
        it = take_item(row_ids, q_ready, rows_done)


@gluon.jit
def store_rows(desc, buf, rows, row):
    """64 gradient rows through the shared buffer `buf` (`copy_rows_out`), waited for until the copy
    has read the buffer, so that the buffer may be refilled."""
    copy_rows_out(desc, buf, rows, row)
    tma.store_wait(0)


@gluon.jit
def gradient_tiles(q, do, k_bufs, v_bufs, k_ready, v_ready, kv_empty, dq, lse2, delta, kv_count, tile_idx, lo, hi,
                   start_m, offs_q, code, n_ctx, qk_scale, tile_mask: gl.constexpr, mask_args,
                   s_layout: gl.constexpr, dq_layout: gl.constexpr, ds_layout: gl.constexpr,
                   BLOCK_N: gl.constexpr, STAGES: gl.constexpr, MASKED: gl.constexpr, halves=None,
                   HALF_KINDS: gl.constexpr = False, HALF: gl.constexpr = 0):
    # Add the dQ contributions of the key tiles tile_idx[lo:hi] to one 64-row half's dq. HALF_KINDS
    # (partial tiles): the half's own kind of each tile skips an empty half's products (after waiting
    # for the tile as the other half does) and runs a full half's without the predicate.
    for t in range(lo, hi):
        s, phase = ring_slot(kv_count, STAGES)
        if HALF_KINDS:
            kind = (gl.load(halves + t).to(gl.int32) >> (2 * HALF)) & 3
            if kind != 0:
                dq = gradient_tile(q, do, k_bufs.index(s), k_ready.index(s), v_bufs.index(s), v_ready.index(s), phase,
                                   dq, lse2, delta, kind == 1, tile_idx + t, start_m, offs_q, code, n_ctx, qk_scale,
                                   tile_mask, mask_args, s_layout, ds_layout, BLOCK_N)
            else:  # an empty half: the whole tile waited for, then only released
                mbarrier.wait(k_ready.index(s), phase)
                mbarrier.wait(v_ready.index(s), phase)
        else:
            dq = gradient_tile(q, do, k_bufs.index(s), k_ready.index(s), v_bufs.index(s), v_ready.index(s), phase, dq,
                               lse2, delta, MASKED, tile_idx + t, start_m, offs_q, code, n_ctx, qk_scale, tile_mask,
                               mask_args, s_layout, ds_layout, BLOCK_N)
        mbarrier.arrive(kv_empty.index(s), count=1)
        kv_count += 1
    return dq, kv_count


@gluon.jit
def gradient_tile(q, do, k_buf, k_bar, v_buf, v_bar, phase, dq, lse2, delta, masked, tile_at, start_m, offs_q, code,
                  n_ctx, qk_scale, tile_mask: gl.constexpr, mask_args, s_layout: gl.constexpr,
                  ds_layout: gl.constexpr, BLOCK_N: gl.constexpr):
    """One key tile's contribution to a half's dq (its index at `tile_at`), through the predicate where
    `masked` (a compile-time or a run-time flag)."""
    # -- scores Q Kᵀ and dP = dO Vᵀ, both products in flight together --
    qk, dp = product_pair(q, k_buf, k_bar, do, v_buf, v_bar, phase, s_layout, BLOCK_N)
    qk, dp = warpgroup_mma_wait(num_outstanding=0, deps=(qk, dp))
    # -- P from the saved lse (base 2; +inf for a row with no key), dS = P ∘ (dP − delta) --
    p = gl.exp2(qk * qk_scale - lse2[:, None])
    if masked:
        start_n = gl.load(tile_at) * BLOCK_N
        offs_k = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        keep = tile_mask(offs_q[:, None], offs_k[None, :], code, n_ctx, mask_args, start_m, start_n, True)
        p = gl.where(keep, p, 0.0)
    ds = gl.convert_layout((p * (dp - delta[:, None])).to(k_buf.dtype), ds_layout)
    # -- dQ += dS K (K's tile read as it lies: [keys, head dim]) --
    dq = warpgroup_mma(ds, k_buf, dq, is_async=True)
    dq, ds = warpgroup_mma_wait(num_outstanding=0, deps=(dq, ds))
    return dq


@gluon.jit
def product_pair(a, b_tile, b_ready, c, d_tile, d_ready, phase, layout: gl.constexpr, COLUMNS: gl.constexpr):
    """a · b_tileᵀ and c · d_tileᵀ (64 × COLUMNS each, from shared memory), issued in flight together,
    each once its barrier says its tile has landed: a tile's scores and dP (or their transposes)."""
    mbarrier.wait(b_ready, phase)
    x = gl.zeros([GROUP_ROWS, COLUMNS], gl.float32, layout=layout)
    x = warpgroup_mma(a, b_tile.permute((1, 0)), x, use_acc=False, is_async=True)
    mbarrier.wait(d_ready, phase)
    y = gl.zeros([GROUP_ROWS, COLUMNS], gl.float32, layout=layout)
    y = warpgroup_mma(c, d_tile.permute((1, 0)), y, use_acc=False, is_async=True)
    return x, y


@gluon.jit
def maskc_backward_dq_ws(
    QDesc, KDesc, VDesc, DODesc, DQDesc, Lse2, Delta, counter,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh, stride_db, stride_dh,
    stride_dqb, stride_dqh,
    head_layout, table_of_head, table_stride, layouts, row_order, full_ptr, full_idx, partial_ptr, partial_idx,
    partial_halves, qk_scale, sm_scale, n_ctx, heads, group, batch_heads, row_tiles, long_rows, items,
    tile_mask: gl.constexpr, mask_args, chunk_line, chunk_start, chunk_tiles, chunk_items, DQWork,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, HALF_KINDS: gl.constexpr, SPLIT: gl.constexpr,
):
    # Shared buffers and barriers, then the partitions: the default one (num_warps = 4) loads, two
    # workers of one warp group each compute (as maskc_forward_ws, with dO tiles beside the query's).
    q_bufs, do_bufs = buffer_pair(QDesc, DODesc, 2, BLOCK_M, HEAD_DIM)
    k_bufs, v_bufs = buffer_pair(KDesc, VDesc, STAGES, BLOCK_N, HEAD_DIM)
    q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids = ring_barriers(STAGES)
    # Each partition's arguments as one tuple, apart from its compile-time ones (as maskc_forward_ws).
    loader = (QDesc, KDesc, VDesc, q_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty,
              row_ids, counter, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
              row_order, head_layout, table_of_head, table_stride, layouts, full_ptr, full_idx, partial_ptr,
              partial_idx, heads, group, batch_heads, row_tiles, long_rows, items,
              DODesc, do_bufs, stride_db, stride_dh, (chunk_line, chunk_start, chunk_tiles, chunk_items))
    computer = (q_bufs, do_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids, DQDesc,
                Lse2, Delta, stride_dqb, stride_dqh, full_idx, partial_idx, partial_halves, qk_scale, sm_scale,
                n_ctx, heads, items, chunk_items, DQWork)
    gl.warp_specialize(
        [
            (issue_loads, (loader, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, True, SPLIT)),
            (gradient_rows, (computer, tile_mask, mask_args, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, 0, HALF_KINDS,
                             SPLIT)),
            (gradient_rows, (computer, tile_mask, mask_args, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, 1, HALF_KINDS,
                             SPLIT)),
        ],
        [4, 4],
        [CONSUMER_REGS, CONSUMER_REGS],
    )


@gluon.jit
def column_of(it, col_order, kv_heads, batch_kv_heads, col_tiles, long_cols, chunks, SPLIT: gl.constexpr):
    """(batch, key/value head, key tile, [first, last) positions of its tile lists) of work item `it`: the
    column program `it` of the unpersisted dK/dV kernel (`backward.maskc_backward_dkdv`; with SPLIT a
    long column's chunk, `item_slot`)."""
    slot, bkv, first, last = item_slot(it, chunks, long_cols, col_tiles, batch_kv_heads, SPLIT)
    return bkv // kv_heads, bkv % kv_heads, gl.load(col_order + slot), first, last


@gluon.jit
def head_column(b, h, col, head_layout, table_of_head, table_stride, layouts, full_ptr, partial_ptr, col_tiles,
                part, SPLIT: gl.constexpr):
    """(layout code, full [lo, hi), partial [lo, hi)) of key tile `col`'s column in query head h's tables,
    at the positions part = [first, last) of its tile list (a chunk's; with SPLIT only)."""
    table = gl.load(table_of_head + h) + b * table_stride
    code = gl.load(head_layout + h) + layouts * table
    at = table * (col_tiles + 1) + col
    full_lo, full_hi, partial_lo, partial_hi = walk_parts(
        gl.load(full_ptr + at), gl.load(full_ptr + at + 1), gl.load(partial_ptr + at), gl.load(partial_ptr + at + 1),
        part[0], part[1], SPLIT)
    return code, full_lo, full_hi, partial_lo, partial_hi


@gluon.jit
def issue_column_loads(args, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                       STAGES: gl.constexpr, SPLIT: gl.constexpr):
    # The loading partition of dK/dV: for each column, its work item (published beside its key and
    # value tiles, which one barrier signals), then for each query head of its group the query and
    # dO tiles of the column (full, then partial), each pair into the next free buffers of the ring
    # with its rows' lse and delta beside them;
    # after the last column, an item past the end, which stops the computing partitions.
    (q_desc, k_desc, v_desc, do_desc, q_bufs, k_bufs, v_bufs, do_bufs, col_ready, col_empty, q_ready, do_ready,
     qdo_empty, col_ids, counter, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh, stride_db,
     stride_dh, col_order, head_layout, table_of_head, table_stride, layouts, full_ptr, full_idx, partial_ptr,
     partial_idx, kv_heads, group, batch_kv_heads, col_tiles, long_cols, items, lse_desc, lse_bufs, delta_desc,
     delta_bufs, heads, n_ctx, chunks) = args
    tile_count = 0
    cols_done = 0
    it = next_item(counter)
    while it < items:
        b, kvh, col, first, last = column_of(it, col_order, kv_heads, batch_kv_heads, col_tiles, long_cols, chunks,
                                             SPLIT)
        cb = publish_item(col_ids, col_empty, it, cols_done)
        mbarrier.expect(col_ready.index(cb), k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        k_row, v_row = descriptor_rows(b, kvh, stride_kb, stride_kh, stride_vb, stride_vh, col * BLOCK_N, HEAD_DIM)
        tma.async_copy_global_to_shared(k_desc, [k_row, 0], col_ready.index(cb), k_bufs.index(cb))
        tma.async_copy_global_to_shared(v_desc, [v_row, 0], col_ready.index(cb), v_bufs.index(cb))
        for g in range(group):
            h = kvh * group + g
            _, full_lo, full_hi, partial_lo, partial_hi = head_column(
                b, h, col, head_layout, table_of_head, table_stride, layouts, full_ptr, partial_ptr, col_tiles,
                (first, last), SPLIT)
            q_row, do_row = descriptor_rows(b, h, stride_qb, stride_qh, stride_db, stride_dh, 0, HEAD_DIM)
            terms = (((b * heads + h) * n_ctx).to(gl.int32), lse_desc, lse_bufs, delta_desc, delta_bufs)
            tile_count = load_walk(q_desc, do_desc, q_bufs, do_bufs, q_ready, do_ready, qdo_empty, q_row, do_row,
                                   (full_idx, full_lo, full_hi, partial_idx, partial_lo, partial_hi), tile_count,
                                   BLOCK_M, STAGES, terms, True)
        cols_done += 1
        it = next_item(counter)
    mbarrier.arrive(col_ready.index(publish_item(col_ids, col_empty, items, cols_done)), count=1)


@gluon.jit
def gradient_columns(args, tile_mask: gl.constexpr, mask_args, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                     HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, HALF: gl.constexpr, HALF_KINDS: gl.constexpr,
                     SPLIT: gl.constexpr):
    # A computing partition: dK and dV of keys [HALF · 64, HALF · 64 + 64) of every key tile the
    # program walks, summed over the query heads of the tile's group.
    (q_bufs, k_bufs, v_bufs, do_bufs, col_ready, col_empty, q_ready, do_ready, qdo_empty, col_ids, dk_desc, dv_desc,
     lse_bufs, delta_bufs, stride_dkb, stride_dkh, stride_dvb, stride_dvh, col_order,
     head_layout, table_of_head, table_stride, layouts, full_ptr, full_idx, partial_ptr, partial_idx, partial_halves,
     qk_scale, sm_scale, n_ctx, kv_heads, group, batch_kv_heads, col_tiles, long_cols, items, chunks, dk_work,
     dv_work) = args
    s_layout: gl.constexpr = product_layout(BLOCK_M)
    g_layout: gl.constexpr = product_layout(HEAD_DIM)
    op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=g_layout, k_width=2)
    tile_count = 0
    cols_done = 0
    it = take_item(col_ids, col_ready, cols_done)
    while it < items:
        b, kvh, col, first, last = column_of(it, col_order, kv_heads, batch_kv_heads, col_tiles, long_cols, chunks,
                                             SPLIT)
        cb = cols_done % 2
        k = k_bufs.index(cb).slice(HALF * GROUP_ROWS, GROUP_ROWS, dim=0)
        v = v_bufs.index(cb).slice(HALF * GROUP_ROWS, GROUP_ROWS, dim=0)
        start_n = col * BLOCK_N + HALF * GROUP_ROWS
        offs_k = start_n + gl.arange(0, GROUP_ROWS, layout=gl.SliceLayout(1, s_layout))
        dk = gl.zeros([GROUP_ROWS, HEAD_DIM], gl.float32, layout=g_layout)
        dv = gl.zeros([GROUP_ROWS, HEAD_DIM], gl.float32, layout=g_layout)
        for g in range(group):
            h = kvh * group + g
            code, full_lo, full_hi, partial_lo, partial_hi = head_column(
                b, h, col, head_layout, table_of_head, table_stride, layouts, full_ptr, partial_ptr, col_tiles,
                (first, last), SPLIT)
            # Stage 1: the column's full tiles, no predicate; Stage 2: its partial tiles, through it.
            dk, dv, tile_count = column_tiles(
                k, v, q_bufs, do_bufs, q_ready, do_ready, qdo_empty, dk, dv, tile_count, lse_bufs,
                delta_bufs, full_idx, full_lo, full_hi, start_n, offs_k, code, n_ctx, qk_scale, tile_mask,
                mask_args, s_layout, op_layout, BLOCK_M, STAGES, False)
            dk, dv, tile_count = column_tiles(
                k, v, q_bufs, do_bufs, q_ready, do_ready, qdo_empty, dk, dv, tile_count, lse_bufs,
                delta_bufs, partial_idx, partial_lo, partial_hi, start_n, offs_k, code, n_ctx, qk_scale,
                tile_mask, mask_args, s_layout, op_layout, BLOCK_M, STAGES, True, partial_halves, HALF_KINDS, HALF)
        # Stage 3: dK (scaled) and dV stored once, through the half's key and value rows (read by no
        # product any more), or, for a long column's chunk, kept unscaled for the sums; the tiles'
        # buffers are free once both halves' copies have left them.
        if SPLIT:
            if it < chunks[3]:
                keep_rows(dk_work, it, dk, g_layout, BLOCK_N, HALF, HEAD_DIM)
                keep_rows(dv_work, it, dv, g_layout, BLOCK_N, HALF, HEAD_DIM)
            else:
                store_gradients(dk_desc, dv_desc, k, v, dk * sm_scale, dv, b, kvh, start_n, stride_dkb, stride_dkh,
                                stride_dvb, stride_dvh, HEAD_DIM)
        else:
            store_gradients(dk_desc, dv_desc, k, v, dk * sm_scale, dv, b, kvh, start_n, stride_dkb, stride_dkh,
                            stride_dvb, stride_dvh, HEAD_DIM)
        mbarrier.arrive(col_empty.index(cb), count=1)
        cols_done += 1
        it = take_item(col_ids, col_ready, cols_done)


@gluon.jit
def store_gradients(dk_desc, dv_desc, k, v, dk, dv, b, kvh, start_n, stride_dkb, stride_dkh, stride_dvb, stride_dvh,
                    HEAD_DIM: gl.constexpr):
    """A half's 64 rows of dK and dV (finished) stored through its key and value rows (`store_rows`)."""
    store_rows(dk_desc, k, dk, b * (stride_dkb // HEAD_DIM) + kvh * (stride_dkh // HEAD_DIM) + start_n)
    store_rows(dv_desc, v, dv, b * (stride_dvb // HEAD_DIM) + kvh * (stride_dvh // HEAD_DIM) + start_n)


@gluon.jit
def column_tiles(k, v, q_bufs, do_bufs, q_ready, do_ready, qdo_empty, dk, dv, tile_count, lse_bufs, delta_bufs,
                 tile_idx, lo, hi, start_n, offs_k, code, n_ctx, qk_scale, tile_mask: gl.constexpr, mask_args,
                 s_layout: gl.constexpr, op_layout: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr,
                 MASKED: gl.constexpr, halves=None, HALF_KINDS: gl.constexpr = False, HALF: gl.constexpr = 0):
    # Add the dK and dV contributions of the query tiles tile_idx[lo:hi] to one 64-key half's dk, dv.
    # HALF_KINDS (partial tiles): the half's own kind of each tile (its 64 keys' share of it) skips an
    # empty half's products (after waiting for the tiles and their row terms as the other half does)
    # and runs a full half's without the predicate.
    for t in range(lo, hi):
        s, phase = ring_slot(tile_count, STAGES)
        start_m = gl.load(tile_idx + t) * BLOCK_M
        if HALF_KINDS:
            kind = (gl.load(halves + t).to(gl.int32) >> (2 * HALF)) & 3
            if kind != 0:
                dk, dv = column_tile(k, v, q_bufs.index(s), q_ready.index(s), do_bufs.index(s), do_ready.index(s),
                                     phase, lse_bufs.index(s), delta_bufs.index(s), dk, dv, kind == 1, start_m,
                                     start_n, offs_k, code, n_ctx, qk_scale, tile_mask, mask_args, s_layout,
                                     op_layout, BLOCK_M)
            else:  # an empty half: the tiles and their row terms waited for, then only released
                mbarrier.wait(q_ready.index(s), phase)
                mbarrier.wait(do_ready.index(s), phase)
        else:
            dk, dv = column_tile(k, v, q_bufs.index(s), q_ready.index(s), do_bufs.index(s), do_ready.index(s), phase,
                                 lse_bufs.index(s), delta_bufs.index(s), dk, dv, MASKED, start_m, start_n, offs_k, code,
                                 n_ctx, qk_scale, tile_mask, mask_args, s_layout, op_layout, BLOCK_M)
        mbarrier.arrive(qdo_empty.index(s), count=1)
        tile_count += 1
    return dk, dv, tile_count


@gluon.jit
def column_tile(k, v, q_buf, q_bar, do_buf, do_bar, phase, lse_buf, delta_buf, dk, dv, masked, start_m, start_n, offs_k,
                code, n_ctx, qk_scale, tile_mask: gl.constexpr, mask_args, s_layout: gl.constexpr,
                op_layout: gl.constexpr, BLOCK_M: gl.constexpr):
    """One query tile's contribution to a 64-key half's dk and dv, through the predicate where `masked`
    (a compile-time or a run-time flag)."""
    offs_q = start_m + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, s_layout))
    # -- transposed scores K Qᵀ and dPᵀ = V dOᵀ, both products in flight together --
    st, dpt = product_pair(k, q_buf, q_bar, v, do_buf, do_bar, phase, s_layout, BLOCK_M)
    st = warpgroup_mma_wait(num_outstanding=1, deps=(st,))
    # -- Pᵀ from the saved lse (base 2; +inf for a row with no key), masked on partial tiles, while
    # dPᵀ's product runs (each row term read from shared memory where its use comes: the loading
    # group brought it beside the tile, and registers are the limit) --
    lse2 = lse_buf.load(gl.SliceLayout(0, s_layout))
    pt = gl.exp2(st * qk_scale - lse2[None, :])
    if masked:
        keep = tile_mask(offs_q[None, :], offs_k[:, None], code, n_ctx, mask_args, start_m, start_n, True)
        pt = gl.where(keep, pt, 0.0)
    delta = delta_buf.load(gl.SliceLayout(0, s_layout))
    # -- dV += Pᵀ dO, dK += dSᵀ Q with dSᵀ = Pᵀ ∘ (dPᵀ − delta): register operands, tiles as they lie --
    pt_op = gl.convert_layout(pt.to(q_buf.dtype), op_layout)
    dv = warpgroup_mma(pt_op, do_buf, dv, is_async=True)
    dpt, pt_op = warpgroup_mma_wait(num_outstanding=1, deps=(dpt, pt_op))
    ds_op = gl.convert_layout((pt * (dpt - delta[None, :])).to(q_buf.dtype), op_layout)
    dk = warpgroup_mma(ds_op, q_buf, dk, is_async=True)
    dv, dk, pt_op, ds_op = warpgroup_mma_wait(num_outstanding=0, deps=(dv, dk, pt_op, ds_op))
    return dk, dv


@gluon.jit
def maskc_backward_dkdv_ws(
    QDesc, KDesc, VDesc, DODesc, DKDesc, DVDesc, Lse2Desc, DeltaDesc, counter,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh, stride_db, stride_dh,
    stride_dkb, stride_dkh, stride_dvb, stride_dvh,
    head_layout, table_of_head, table_stride, layouts, col_order, full_ptr, full_idx, partial_ptr, partial_idx,
    partial_halves, qk_scale, sm_scale, n_ctx, heads, kv_heads, group, batch_kv_heads, col_tiles, long_cols, items,
    tile_mask: gl.constexpr, mask_args, chunk_line, chunk_start, chunk_tiles, chunk_items, DKWork, DVWork,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, HALF_KINDS: gl.constexpr, SPLIT: gl.constexpr,
):
    # Shared buffers and barriers, then the partitions: the default one (num_warps = 4) loads, two
    # workers of one warp group each compute. The rings of `ring_barriers` serve with their roles
    # turned: its item ring (two slots) holds key tiles, its tile ring (STAGES) query and dO tiles.
    gl.static_assert(BLOCK_N == CONSUMERS * GROUP_ROWS, "each computing partition takes 64 keys of a tile")
    k_bufs, v_bufs = buffer_pair(KDesc, VDesc, 2, BLOCK_N, HEAD_DIM)
    q_bufs, do_bufs = buffer_pair(QDesc, DODesc, STAGES, BLOCK_M, HEAD_DIM)
    col_ready, col_empty, q_ready, do_ready, qdo_empty, col_ids = ring_barriers(STAGES)
    chunks = (chunk_line, chunk_start, chunk_tiles, chunk_items)
    # the rows' lse and delta of each query tile in the ring (their descriptors: [BLOCK_M] pieces)
    lse_bufs = gl.allocate_shared_memory(gl.float32, [STAGES, BLOCK_M], Lse2Desc.layout)
    delta_bufs = gl.allocate_shared_memory(gl.float32, [STAGES, BLOCK_M], DeltaDesc.layout)
    loader = (QDesc, KDesc, VDesc, DODesc, q_bufs, k_bufs, v_bufs, do_bufs, col_ready, col_empty, q_ready, do_ready,
              qdo_empty, col_ids, counter, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
              stride_db, stride_dh, col_order, head_layout, table_of_head, table_stride, layouts, full_ptr,
              full_idx, partial_ptr, partial_idx, kv_heads, group, batch_kv_heads, col_tiles, long_cols, items,
              Lse2Desc, lse_bufs, DeltaDesc, delta_bufs, heads, n_ctx, chunks)
    computer = (q_bufs, k_bufs, v_bufs, do_bufs, col_ready, col_empty, q_ready, do_ready, qdo_empty, col_ids, DKDesc,
                DVDesc, lse_bufs, delta_bufs, stride_dkb, stride_dkh, stride_dvb, stride_dvh, col_order,
                head_layout, table_of_head, table_stride, layouts, full_ptr, full_idx, partial_ptr, partial_idx,
                partial_halves, qk_scale, sm_scale, n_ctx, kv_heads, group, batch_kv_heads, col_tiles, long_cols, items,
                chunks, DKWork, DVWork)
    gl.warp_specialize(
        [
            (issue_column_loads, (loader, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, SPLIT)),
            (gradient_columns, (computer, tile_mask, mask_args, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, 0, HALF_KINDS,
                                SPLIT)),
            (gradient_columns, (computer, tile_mask, mask_args, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, 1, HALF_KINDS,
                                SPLIT)),
        ],
        [4, 4],
        [CONSUMER_REGS, CONSUMER_REGS],
    )
