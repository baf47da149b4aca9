"""Decoding kernels: a few queries (m = 1 … 16 per sequence) over a KV cache's slots, split-KV.

A decoding step reads every key the cache holds once, and the cache holds only what the spec says
future queries read (maskc.KVCache), so the step is bound by the bandwidth of reading those keys
and values. To use the whole GPU for a single sequence, the slots of each (sequence, KV head) are
split across programs (split-KV, as in FlashDecoding); each program runs an online softmax over
its share and writes a partial output with its log-sum-exp, and a second kernel merges the
partials by log-sum-exp. The query heads of one KV head (grouped-query attention) are rows of one
program, so each key and value tile is loaded once for the whole group.

Slots are not in position order (a rolling buffer wraps around), so the cache passes each slot's
position and the kernel evaluates the pattern's predicate `tile_mask` on (query position, slot
position): the order of the slots never matters to the softmax. Empty slots hold position −1.

`backends/triton/decode.py` launches them, the split kernel with the warps and stages below.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import LN2, mma

#: The split kernel's warps and pipeline stages (its slots per tile, BLOCK_N, also set the shares: decode.py).
SPLIT_WARPS = 4
SPLIT_STAGES = 2


@triton.jit
def decode_keep(q_pos, k_pos, row_group, head_layout, kvh, n_ctx, tile_mask: tl.constexpr, mask_args,
                GROUP: tl.constexpr, ONE_LAYOUT: tl.constexpr):
    # The predicate on true positions; with per-head patterns each query head of the group
    # evaluates its own layout's branch (tile_mask branches on a layout that is uniform per call).
    if ONE_LAYOUT:
        keep = tile_mask(q_pos[:, None], k_pos[None, :], 0, n_ctx, mask_args, 0, 0, False)  # a cache's positions
    else:
        keep = q_pos[:, None] < 0
        for g in tl.static_range(GROUP):
            layout = tl.load(head_layout + kvh * GROUP + g)
            mine = tile_mask(q_pos[:, None], k_pos[None, :], layout, n_ctx, mask_args, 0, 0, False)
            keep = tl.where((row_group == g)[:, None], mine, keep)
    return keep


@triton.jit
def maskc_decode_split(
    Q, K, V, Positions, QPositions, SlotCounts, OutPart, LsePart,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_pb,
    head_layout, qk_scale, n_ctx, heads, kv_heads, q_len, slots_per_split, splits, tile_mask: tl.constexpr, mask_args,
    GROUP: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    VALUE_DIM: tl.constexpr, ONE_LAYOUT: tl.constexpr, PRECISION: tl.constexpr,
):
    # Stage 1: the program's sequence b, KV head and share of the slots.
    bkv = tl.program_id(0)
    split = tl.program_id(1)
    b = bkv // kv_heads
    kvh = bkv % kv_heads
    lo = split * slots_per_split
    hi = tl.minimum(lo + slots_per_split, tl.load(SlotCounts + b))

    # Stage 2: the queries of the whole GQA group as rows r = g * q_len + a (head g of the group,
    # query a), padded to ROWS; query a of sequence b sits at position QPositions[b] + a.
    offs_r = tl.arange(0, ROWS)
    row_group = offs_r // q_len
    row_query = offs_r % q_len
    row_in = offs_r < GROUP * q_len
    h = kvh * GROUP + row_group
    offs_d = tl.arange(0, HEAD_DIM)
    offs_v = tl.arange(0, VALUE_DIM)
    q_ptrs = (Q + b.to(tl.int64) * stride_qb + h.to(tl.int64)[:, None] * stride_qh
              + row_query.to(tl.int64)[:, None] * stride_qm + offs_d[None, :])
    q = tl.load(q_ptrs, mask=row_in[:, None], other=0.0)
    q_pos = tl.load(QPositions + b) + row_query

    # Stage 3: online softmax (base 2) over this share, one tile of BLOCK_N slots at a time; each
    # K and V tile is loaded once for all heads of the group.
    k_base = K + b.to(tl.int64) * stride_kb + kvh.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + kvh.to(tl.int64) * stride_vh
    m_i = tl.full([ROWS], float("-inf"), tl.float32)
    l_i = tl.zeros([ROWS], tl.float32)
    acc = tl.zeros([ROWS, VALUE_DIM], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        slot_in = offs_n < hi
        k_pos = tl.load(Positions + b.to(tl.int64) * stride_pb + offs_n, mask=slot_in, other=-1)
        rows_n = offs_n.to(tl.int64)[:, None]
        k = tl.load(k_base + rows_n * stride_kn + offs_d[None, :], mask=slot_in[:, None], other=0.0)
        v = tl.load(v_base + rows_n * stride_vn + offs_v[None, :], mask=slot_in[:, None], other=0.0)
        qk = mma(q, tl.trans(k), None, PRECISION)
        filled = k_pos >= 0
        keep = decode_keep(q_pos, tl.where(filled, k_pos, 0), row_group, head_layout, kvh, n_ctx, tile_mask, mask_args,
                           GROUP, ONE_LAYOUT)
        keep = keep & filled[None, :] & row_in[:, None]
        qk = tl.where(keep, qk, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        m_use = tl.where(m_ij == float("-inf"), 0.0, m_ij)
        p = tl.math.exp2(qk * qk_scale - m_use[:, None])
        alpha = tl.math.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = mma(p.to(v.dtype), v, acc * alpha[:, None], PRECISION)
        m_i = m_ij

    # Stage 4: the share's normalised output and its log-sum-exp (base 2; −inf when it saw no key).
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    part_row = ((b * heads + h) * q_len + row_query).to(tl.int64) * splits + split
    tl.store(OutPart + part_row[:, None] * VALUE_DIM + offs_v[None, :], acc / l_safe[:, None], mask=row_in[:, None])
    tl.store(LsePart + part_row, tl.where(empty, float("-inf"), m_i + tl.math.log2(l_safe)), mask=row_in)


@triton.jit
def maskc_decode_merge(OutPart, LsePart, Out, Lse, splits,
                       SPLITS: tl.constexpr, VALUE_DIM: tl.constexpr):
    # One query row of one head: weigh the shares' outputs by exp2(lse_s − lse), lse over shares.
    row = tl.program_id(0).to(tl.int64)
    offs_s = tl.arange(0, SPLITS)
    offs_v = tl.arange(0, VALUE_DIM)
    share_in = offs_s < splits
    lse_s = tl.load(LsePart + row * splits + offs_s, mask=share_in, other=float("-inf"))
    top = tl.max(lse_s, 0)
    top_use = tl.where(top == float("-inf"), 0.0, top)
    weight = tl.math.exp2(lse_s - top_use)
    total = tl.sum(weight, 0)
    parts = tl.load(OutPart + (row * splits + offs_s)[:, None] * VALUE_DIM + offs_v[None, :],
                    mask=share_in[:, None], other=0.0)
    out = tl.sum(parts * weight[:, None], 0) / tl.where(total == 0.0, 1.0, total)
    tl.store(Out + row * VALUE_DIM + offs_v, out.to(Out.dtype.element_ty))
    tl.store(Lse + row, tl.where(total == 0.0, float("-inf"), (top + tl.math.log2(total)) * LN2))
