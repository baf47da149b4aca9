"""Nearest direction: each point's label is the direction of largest dot product, in one pass.

A cluster leaf labels every query and key by the centroid of largest cosine (k-means with
centroids) or by the bucket argmax([x·R, −x·R]) (angular LSH). Dividing a point by its norm
does not change which direction wins, so the kernel takes the points as they are: one read of
q or k in their own dtype, the scores in float32 registers, never written out. bfloat16 points
multiply three bfloat16 pieces of the directions (exact products, float32 sums: bfloat16 tensor
cores at float32 precision); other dtypes multiply float32 directions with tf32x3. Written with
torch, the same labels cost an upcast and a normalisation of q and k in float32, a float32
product with scores in memory, and an argmax over them (maskc.clustering).

One program owns BLOCK_P points of one group (a (batch, head) pair) and walks the directions
BLOCK_M at a time, keeping each point's best score and its first index (ties go to the lower
index, as torch.argmax's). With SIGNED the labels run over the directions, then their negatives:
direction m's negative is label M + m, and a positive direction wins a tie with a negative one.

`backends/triton/nearest.py` launches it.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def running_best(best, best_at, scores, start, valid):
    # Fold one chunk of scores into each point's running best: strictly greater only, so that among
    # equal scores the lowest label (the earliest chunk, then the lowest column) stays.
    chunk_best, chunk_at = tl.max(tl.where(valid[None, :], scores, float("-inf")), axis=1, return_indices=True,
                                  return_indices_tie_break_left=True)
    take = chunk_best > best
    return tl.where(take, chunk_best, best), tl.where(take, start + chunk_at, best_at)


@triton.jit
def scores_of(x, Pieces, stride_piece, d_offsets, d_mask, PIECES: tl.constexpr, PRECISION: tl.constexpr,
              UPCAST: tl.constexpr):
    # x · d for one chunk of directions, in float32 precision. PIECES == 3: x is bfloat16 and the
    # directions come as three bfloat16 pieces (hi + mid + lo = the float32 value exactly), so every
    # product is exact and only the float32 sums round (smallest piece first). PIECES == 1: float32
    # directions, x upcast, products at PRECISION (tf32x3 on tensor cores, or ieee).
    if PIECES == 3:
        scores = tl.zeros([x.shape[0], d_offsets.shape[1]], tl.float32)
        for piece in tl.static_range(2, -1, -1):
            d = tl.load(Pieces + piece * stride_piece + d_offsets, mask=d_mask, other=0.0)
            if UPCAST:  # the interpreter multiplies bfloat16 as raw bits: the same products in float32
                scores = tl.dot(x.to(tl.float32), d.to(tl.float32), scores, input_precision="ieee")
            else:
                scores = tl.dot(x, d, scores)
    else:
        d = tl.load(Pieces + d_offsets, mask=d_mask, other=0.0)
        scores = tl.dot(x.to(tl.float32), d, input_precision=PRECISION)
    return scores


@triton.jit
def maskc_nearest_direction(
    X, Pieces, Labels,
    stride_xg, stride_xp, stride_piece, stride_dg, stride_dm,
    points, directions,
    DIM: tl.constexpr, PADDED_DIM: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
    SIGNED: tl.constexpr, PIECES: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    # Stage 1: the program's group and points (zeros past the points and the dim).
    g = tl.program_id(1).to(tl.int64)
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_d = tl.arange(0, PADDED_DIM)
    p_in = offs_p < points
    d_in = offs_d < DIM
    x_tile = X + g * stride_xg + offs_p.to(tl.int64)[:, None] * stride_xp + offs_d[None, :]
    x = tl.load(x_tile, mask=p_in[:, None] & d_in[None, :], other=0.0)
    best = tl.full([BLOCK_P], float("-inf"), tl.float32)
    best_at = tl.zeros([BLOCK_P], tl.int32)
    worst = tl.full([BLOCK_P], float("-inf"), tl.float32)
    worst_at = tl.zeros([BLOCK_P], tl.int32)
    # Stage 2: the directions, BLOCK_M at a time: scores in registers, the running best per point
    # (and, SIGNED, the best of the negated scores: the running best of −x·d).
    for start in range(0, directions, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        m_in = offs_m < directions
        d_offsets = g * stride_dg + offs_m[None, :].to(tl.int64) * stride_dm + offs_d[:, None]
        scores = scores_of(x, Pieces, stride_piece, d_offsets, d_in[:, None] & m_in[None, :], PIECES, PRECISION,
                           UPCAST)
        best, best_at = running_best(best, best_at, scores, start, m_in)
        if SIGNED:
            worst, worst_at = running_best(worst, worst_at, -scores, start, m_in)
    # Stage 3: the label; with SIGNED a negative direction only where it beats every positive one.
    label = best_at
    if SIGNED:
        label = tl.where(worst > best, directions + worst_at, best_at)
    tl.store(Labels + g * points + offs_p, label.to(tl.int64), mask=p_in)
