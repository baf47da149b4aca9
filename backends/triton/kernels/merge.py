"""Merging the passes of a schedule by log-sum-exp: one kernel forward, one per pass backward.

Pass p gave, for its rows (original queries), out_p and lse_p. Over disjoint passes whose union
is the mask, lse = log Σ_p exp(lse_p) and out = Σ_p w_p · out_p with w_p = exp(lse_p − lse).
The forward kernel takes a block of original rows and reads, for every layer (a pass, or one
occurrence of a row in a pass that holds a row more than once), the row's position in the pass
from an inverse table (−1: the layer does not hold the row); it merges with a running maximum,
as an online softmax does, and writes out and lse once. A row no layer holds gets lse = −inf
and zeros.

Backward, per pass row at position i holding original row r (−1 on the pass's padding):
d out_p[i] = w_p · d out[r] and d lse_p[i] = w_p · ((out_p[i] − out[r]) · d out[r] + d lse[r]),
from ∂lse/∂lse_p = w_p and ∂out/∂lse_p = w_p · (out_p − out). Padding and rows whose lse_p is
−inf get zeros. The pass's own backward then sees D = w_p · (d out · out − d lse): the merged
row term, so its gradients are exact.

Every stride triple is (batch, head, row); the last dim is contiguous. The arithmetic runs in
the dtype of the merged lse (float32 on the GPU path; float64 in tests).
"""

from __future__ import annotations

import triton
import triton.language as tl

#: Rows per program and warps of both kernels.
BLOCK_ROWS = 32
WARPS = 4


@triton.jit
def row_offsets(strides, b, h, rows):
    # Offsets of rows `rows` of head h of sequence b, for a (batch, head, row) stride triple.
    return b.to(tl.int64) * strides[0] + h.to(tl.int64) * strides[1] + rows.to(tl.int64) * strides[2]


@triton.jit
def maskc_merge_forward(
    Outs, Lses, OutStrides, LseStrides, Inverse, Out, Lse, out_strides, lse_strides, heads, n, value_dim,
    LAYERS: tl.constexpr, BLOCK_R: tl.constexpr, VALUE_BLOCK: tl.constexpr,
):
    # Stage 1: the program's rows of one (sequence, head).
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    b = tl.program_id(1) // heads
    h = tl.program_id(1) % heads
    row_in = rows < n
    offs_v = tl.arange(0, VALUE_BLOCK)
    v_in = offs_v < value_dim
    dtype = Lse.dtype.element_ty

    # Stage 2: the layers one after the other, the sum kept relative to the running maximum.
    top = tl.full([BLOCK_R], float("-inf"), dtype)
    total = tl.zeros([BLOCK_R], dtype)
    acc = tl.zeros([BLOCK_R, VALUE_BLOCK], dtype)
    for layer in tl.static_range(LAYERS):
        pos = tl.load(Inverse + layer * n + rows, mask=row_in, other=-1)
        held = pos >= 0
        lse_l = tl.load(Lses[layer] + row_offsets(LseStrides[layer], b, h, pos), mask=held,
                        other=float("-inf")).to(dtype)
        live = lse_l != float("-inf")
        new_top = tl.maximum(top, lse_l)
        anchor = tl.where(new_top == float("-inf"), 0.0, new_top)
        alpha = tl.exp(top - anchor)
        weight = tl.where(live, tl.exp(lse_l - anchor), 0.0)
        part = tl.load(Outs[layer] + row_offsets(OutStrides[layer], b, h, pos)[:, None] + offs_v[None, :],
                       mask=live[:, None] & v_in[None, :], other=0.0).to(dtype)
        total = total * alpha + weight
        acc = acc * alpha[:, None] + weight[:, None] * part
        top = new_top

    # Stage 3: normalised output and lse (−inf, zeros where no layer holds a key).
    reached = total > 0
    lse = tl.where(reached, top + tl.log(tl.where(reached, total, 1.0)), float("-inf"))
    out = acc / tl.where(reached, total, 1.0)[:, None]
    tl.store(Out + row_offsets(out_strides, b, h, rows)[:, None] + offs_v[None, :],
             out.to(Out.dtype.element_ty), mask=row_in[:, None] & v_in[None, :])
    tl.store(Lse + row_offsets(lse_strides, b, h, rows), lse.to(dtype), mask=row_in)


@triton.jit
def maskc_merge_backward(
    OutP, LseP, Rows, Out, Lse, DOut, DLse, DOutP, DLseP,
    out_p_strides, lse_p_strides, out_strides, lse_strides, d_out_strides, d_lse_strides,
    d_out_p_strides, d_lse_p_strides, heads, size, value_dim,
    BLOCK_R: tl.constexpr, VALUE_BLOCK: tl.constexpr,
):
    # Stage 1: the program's rows of one pass (positions i, original rows r) of one (sequence, head).
    pos = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    b = tl.program_id(1) // heads
    h = tl.program_id(1) % heads
    pos_in = pos < size
    r = tl.load(Rows + pos, mask=pos_in, other=-1)
    held = r >= 0
    offs_v = tl.arange(0, VALUE_BLOCK)
    v_in = offs_v < value_dim
    dtype = Lse.dtype.element_ty

    # Stage 2: the pass's weight in the merged row (zero on padding and where the pass saw no key).
    lse_p = tl.load(LseP + row_offsets(lse_p_strides, b, h, pos), mask=held, other=float("-inf")).to(dtype)
    live = lse_p != float("-inf")
    lse = tl.load(Lse + row_offsets(lse_strides, b, h, r), mask=live, other=0.0)
    weight = tl.where(live, tl.exp(lse_p - tl.where(live, lse, 0.0)), 0.0)

    # Stage 3: the gradients of the pass's output and lse.
    tile = live[:, None] & v_in[None, :]
    d_out = tl.load(DOut + row_offsets(d_out_strides, b, h, r)[:, None] + offs_v[None, :], mask=tile,
                    other=0.0).to(dtype)
    out = tl.load(Out + row_offsets(out_strides, b, h, r)[:, None] + offs_v[None, :], mask=tile, other=0.0).to(dtype)
    out_p = tl.load(OutP + row_offsets(out_p_strides, b, h, pos)[:, None] + offs_v[None, :], mask=tile,
                    other=0.0).to(dtype)
    d_lse = tl.load(DLse + row_offsets(d_lse_strides, b, h, r), mask=live, other=0.0).to(dtype)
    d_lse_p = tl.where(live, weight * (tl.sum((out_p - out) * d_out, 1) + d_lse), 0.0)
    tl.store(DOutP + row_offsets(d_out_p_strides, b, h, pos)[:, None] + offs_v[None, :],
             (weight[:, None] * d_out).to(DOutP.dtype.element_ty), mask=pos_in[:, None] & v_in[None, :])
    tl.store(DLseP + row_offsets(d_lse_p_strides, b, h, pos), d_lse_p.to(DLseP.dtype.element_ty), mask=pos_in)
