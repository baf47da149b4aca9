"""Forward pass: block-sparse flash attention over the IR's block-CSR, full tiles first.

One program owns one query tile of one (batch, head). It walks the row's full tiles with no
masking at all (a bounds mask on the last key tile only when n is not a multiple of BLOCK_N),
then its partial tiles with the generated predicate `tile_mask`. Long rows (a global token's)
run first for every head, so that they do not serialize the tail; the others head by head, so
that concurrent programs share a head's keys and values in L2 (`program_slot`, tables.py).
Online softmax in base 2 as in Triton's fused-attention tutorial; a row that meets no key keeps
m = −inf without producing NaN and ends with zeros and lse = −inf.

`FORWARD_KERNEL` is a template: codegen splices the predicate's parameters into it; `forward.py`
launches it.
"""

from __future__ import annotations

#: log2(e): the kernels work in base 2, so the score scale is folded with it.
LOG2E = 1.4426950408889634

FORWARD_KERNEL = """
@triton.jit
def forward_tile(acc, m_i, l_i, q, k_tile, v_tile, offs_q, offs_k, layout, n_ctx, k_lo, k_hi, qk_scale, ${mask_params}
                 MASKED: tl.constexpr, EVEN_N: tl.constexpr, PRECISION: tl.constexpr):
    # Keys are positions; only those in [k_lo, k_hi) are the call's (all n of them unless rectangular).
    if EVEN_N:
        k = tl.load(k_tile)
        v = tl.load(v_tile)
    else:
        k_in = (offs_k >= k_lo) & (offs_k < k_hi)
        k = tl.load(k_tile, mask=k_in[:, None], other=0.0)
        v = tl.load(v_tile, mask=k_in[:, None], other=0.0)
    qk = mma(q, tl.trans(k), None, PRECISION)
    if MASKED:
        keep = tile_mask(offs_q[:, None], offs_k[None, :], layout, n_ctx, ${mask_args})
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
    p = tl.math.exp2(qk * qk_scale - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = mma(p.to(v.dtype), v, acc, PRECISION)
    return acc, m_ij, l_i


@triton.jit
def forward_tiles(acc, m_i, l_i, q, k_head, v_head, k_local, v_local, stride_kn, stride_vn,
                  tile_idx, lo, hi, offs_q, offs_n, layout, n_ctx, k_lo, k_hi, qk_scale, ${mask_params}
                  BLOCK_N: tl.constexpr, MASKED: tl.constexpr, EVEN_N: tl.constexpr, PRECISION: tl.constexpr):
    # Fold the key tiles tile_idx[lo:hi] of one query row into the running softmax.
    start_n = tile_start(tile_idx, lo, hi, BLOCK_N)
    for t in range(lo, hi):
        next_n = tile_start(tile_idx, t + 1, hi, BLOCK_N)
        acc, m_i, l_i = forward_tile(
            acc, m_i, l_i, q,
            k_head + start_n.to(tl.int64) * stride_kn + k_local,
            v_head + start_n.to(tl.int64) * stride_vn + v_local,
            offs_q, start_n + offs_n, layout, n_ctx, k_lo, k_hi, qk_scale, ${mask_args}
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
    q_starts, q_start, q_len, k_lo, k_hi, ${mask_params}
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr,
    EVEN_N: tl.constexpr, PER_BATCH_Q: tl.constexpr, PRECISION: tl.constexpr,
):
    # Rows and keys are addressed by position: query row a of this batch element is position
    # q_lo + a, key row c is position k_lo + c (both 0 in full-length calls).
    b, h, kvh, bh, layout, table, row = row_program(
        row_order, head_layout, table_of_head, table_stride, layouts, long_rows, programs, batch_heads, heads, group
    )
    q_lo = tl.load(q_starts + b) if PER_BATCH_Q else q_start
    start_m = row * BLOCK_M
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_v = tl.arange(0, VALUE_DIM)
    offs_q = start_m + offs_m
    row_in = (offs_q >= q_lo) & (offs_q < q_lo + q_len)
    q_rows = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + (start_m - q_lo).to(tl.int64) * stride_qm
    q_tile = q_rows + offs_m[:, None] * stride_qm + offs_d[None, :]
    if EVEN_N:
        q = tl.load(q_tile)
    else:
        q = tl.load(q_tile, mask=row_in[:, None], other=0.0)
    k_head = K + b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh - tl.cast(k_lo, tl.int64) * stride_kn
    v_head = V + b.to(tl.int64) * stride_vb + kvh.to(tl.int64) * stride_vh - tl.cast(k_lo, tl.int64) * stride_vn
    k_local = offs_n[:, None] * stride_kn + offs_d[None, :]
    v_local = offs_n[:, None] * stride_vn + offs_v[None, :]
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, VALUE_DIM], tl.float32)
    at = table * (row_tiles + 1) + row
    acc, m_i, l_i = forward_tiles(
        acc, m_i, l_i, q, k_head, v_head, k_local, v_local, stride_kn, stride_vn,
        full_idx, tl.load(full_ptr + at), tl.load(full_ptr + at + 1),
        offs_q, offs_n, layout, n_ctx, k_lo, k_hi, qk_scale, ${mask_args}
        BLOCK_N, False, EVEN_N, PRECISION,
    )
    acc, m_i, l_i = forward_tiles(
        acc, m_i, l_i, q, k_head, v_head, k_local, v_local, stride_kn, stride_vn,
        partial_idx, tl.load(partial_ptr + at), tl.load(partial_ptr + at + 1),
        offs_q, offs_n, layout, n_ctx, k_lo, k_hi, qk_scale, ${mask_args}
        BLOCK_N, True, EVEN_N, PRECISION,
    )
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * LN2)
    o_rows = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + (start_m - q_lo).to(tl.int64) * stride_om
    o_tile = o_rows + offs_m[:, None] * stride_om + offs_v[None, :]
    tl.store(o_tile, out.to(Out.dtype.element_ty), mask=row_in[:, None])
    tl.store(Lse + bh.to(tl.int64) * q_len + (offs_q - q_lo), lse, mask=row_in)
"""
