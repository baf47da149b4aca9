"""dQ on Hopper, warp-specialised: the forward's plan (kernels/forward_ws.py) for the dQ kernel.

dQ walks the rows as the forward does (`backward.maskc_backward_dq`: per query tile, its key tiles,
full ones without the predicate, partial ones through `tile_mask`), so it takes the forward's
persistent programs, work-item counter and loading partition unchanged, the loader also bringing
each row's dO tile beside its query tile (`issue_loads` with WITH_DO). Two computing partitions
take the 64-row halves of each query tile: per key tile the scores Q Kᵀ and dP = dO Vᵀ (two
warp-group products from shared memory, in flight together), P = exp2(scores · scale − lse), dS =
P ∘ (dP − delta) in registers, and dQ += dS K with dS as the register operand. dQ is scaled and
stored once per row.

Calls it serves: those of the forward kernel (`forward.ws_eligible`) whose dQ is not added to an
earlier pass's. Key tiles of 64: a 128-row query and dO tile pair per slot (two slots) leaves
shared memory for two or three 64-key stages. Not in the tuning space by default
(MASKC_TRITON_WS_DQ=1 adds it): it has not yet run on a GPU (bench/NOTES.md).
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, warpgroup_mma, warpgroup_mma_wait

from .forward_ws import GROUP_ROWS, half_of_row, issue_loads, product_layout, ring_barriers, ring_slot, take_item


@gluon.jit
def gradient_rows(args, tile_mask: gl.constexpr, mask_args, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, HALF: gl.constexpr):
    # A computing partition: dQ of rows [HALF · 64, HALF · 64 + 64) of every query tile the program walks.
    (q_bufs, do_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids, dq_ptr, lse2_ptr,
     delta_ptr, stride_dqb, stride_dqh, stride_dqm, row_order, head_layout, table_of_head, table_stride, layouts,
     full_ptr, full_idx, partial_ptr, partial_idx, qk_scale, sm_scale, n_ctx, heads, group, batch_heads, row_tiles,
     long_rows, items) = args
    s_layout: gl.constexpr = product_layout(BLOCK_N)
    dq_layout: gl.constexpr = product_layout(HEAD_DIM)
    ds_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=dq_layout, k_width=2)
    rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    walk = (row_order, head_layout, table_of_head, table_stride, layouts, full_ptr, partial_ptr, heads, group,
            batch_heads, row_tiles, long_rows)
    kv_count = 0
    rows_done = 0
    it = take_item(row_ids, q_ready, rows_done)
    while it < items:
        b, h, bh, code, start_m, qb, full_lo, full_hi, partial_lo, partial_hi = half_of_row(
            it, rows_done, walk, BLOCK_M, HALF)
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
            BLOCK_N, STAGES, True)
        # the query and dO tiles' buffers are free once both halves are past their last product
        mbarrier.arrive(q_empty.index(qb), count=1)
        # Stage 3: dQ scaled, stored once.
        offs_m = start_m + gl.arange(0, GROUP_ROWS, layout=gl.SliceLayout(1, dq_layout))
        offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, dq_layout))
        dq_rows = dq_ptr + b.to(gl.int64) * stride_dqb + h.to(gl.int64) * stride_dqh
        gl.store(dq_rows + offs_m.to(gl.int64)[:, None] * stride_dqm + offs_d[None, :],
                 (dq * sm_scale).to(dq_ptr.dtype.element_ty))
        rows_done += 1
        it = take_item(row_ids, q_ready, rows_done)


@gluon.jit
def gradient_tiles(q, do, k_bufs, v_bufs, k_ready, v_ready, kv_empty, dq, lse2, delta, kv_count, tile_idx, lo, hi,
                   start_m, offs_q, code, n_ctx, qk_scale, tile_mask: gl.constexpr, mask_args,
                   s_layout: gl.constexpr, dq_layout: gl.constexpr, ds_layout: gl.constexpr,
                   BLOCK_N: gl.constexpr, STAGES: gl.constexpr, MASKED: gl.constexpr):
    # Add the dQ contributions of the key tiles tile_idx[lo:hi] to one 64-row half's dq.
    for t in range(lo, hi):
        s, phase = ring_slot(kv_count, STAGES)
        # -- scores Q Kᵀ and dP = dO Vᵀ, both products in flight together --
        mbarrier.wait(k_ready.index(s), phase)
        qk = gl.zeros([GROUP_ROWS, BLOCK_N], gl.float32, layout=s_layout)
        qk = warpgroup_mma(q, k_bufs.index(s).permute((1, 0)), qk, use_acc=False, is_async=True)
        mbarrier.wait(v_ready.index(s), phase)
        dp = gl.zeros([GROUP_ROWS, BLOCK_N], gl.float32, layout=s_layout)
        dp = warpgroup_mma(do, v_bufs.index(s).permute((1, 0)), dp, use_acc=False, is_async=True)
        qk, dp = warpgroup_mma_wait(num_outstanding=0, deps=(qk, dp))
        # -- P from the saved lse (base 2; +inf for a row with no key), dS = P ∘ (dP − delta) --
        p = gl.exp2(qk * qk_scale - lse2[:, None])
        if MASKED:
            start_n = gl.load(tile_idx + t) * BLOCK_N
            offs_k = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
            keep = tile_mask(offs_q[:, None], offs_k[None, :], code, n_ctx, mask_args, start_m, start_n, True)
            p = gl.where(keep, p, 0.0)
        ds = gl.convert_layout((p * (dp - delta[:, None])).to(k_bufs.dtype), ds_layout)
        # -- dQ += dS K (K's tile read as it lies: [keys, head dim]) --
        dq = warpgroup_mma(ds, k_bufs.index(s), dq, is_async=True)
        dq, ds = warpgroup_mma_wait(num_outstanding=0, deps=(dq, ds))
        mbarrier.arrive(kv_empty.index(s), count=1)
        kv_count += 1
    return dq, kv_count


@gluon.jit
def maskc_backward_dq_ws(
    QDesc, KDesc, VDesc, DODesc, DQ, Lse2, Delta, counter,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh, stride_db, stride_dh,
    stride_dqb, stride_dqh, stride_dqm,
    head_layout, table_of_head, table_stride, layouts, row_order, full_ptr, full_idx, partial_ptr, partial_idx,
    qk_scale, sm_scale, n_ctx, heads, group, batch_heads, row_tiles, long_rows, items,
    tile_mask: gl.constexpr, mask_args,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
    CONSUMER_REGS: gl.constexpr,
):
    # Shared buffers and barriers, then the partitions: the default one (num_warps = 4) loads, two
    # workers of one warp group each compute (as maskc_forward_ws, with dO tiles beside the query's).
    dtype: gl.constexpr = QDesc.dtype
    q_bufs = gl.allocate_shared_memory(dtype, [2, BLOCK_M, HEAD_DIM], QDesc.layout)
    do_bufs = gl.allocate_shared_memory(dtype, [2, BLOCK_M, HEAD_DIM], DODesc.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], KDesc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], VDesc.layout)
    q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids = ring_barriers(STAGES)
    # Each partition's arguments as one tuple, apart from its compile-time ones (as maskc_forward_ws).
    loader = (QDesc, KDesc, VDesc, q_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty,
              row_ids, counter, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
              row_order, head_layout, table_of_head, table_stride, layouts, full_ptr, full_idx, partial_ptr,
              partial_idx, heads, group, batch_heads, row_tiles, long_rows, items,
              DODesc, do_bufs, stride_db, stride_dh)
    computer = (q_bufs, do_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids, DQ, Lse2,
                Delta, stride_dqb, stride_dqh, stride_dqm,
                row_order, head_layout, table_of_head, table_stride, layouts, full_ptr, full_idx, partial_ptr,
                partial_idx, qk_scale, sm_scale, n_ctx, heads, group, batch_heads, row_tiles, long_rows, items)
    gl.warp_specialize(
        [
            (issue_loads, (loader, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, True)),
            (gradient_rows, (computer, tile_mask, mask_args, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, 0)),
            (gradient_rows, (computer, tile_mask, mask_args, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, 1)),
        ],
        [4, 4],
        [CONSUMER_REGS, CONSUMER_REGS],
    )
