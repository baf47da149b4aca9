"""Rows in another order: y[g, p] = x[g, order[g, p]] for every group g (a batch element and head).

A cluster pattern runs with q, k and v sorted by cluster and its output sorted back
(`backends/triton/clusters.py`); each of those is a permutation of whole rows. torch's gather
reads an index per element (the index of a (B, H, N) order expanded over D); here one program
copies BLOCK_R rows, reading each row's source once: one read and one write of the rows.

`backends/triton/rows.py` launches it.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def maskc_permute_rows(
    X, Order, Y,
    stride_xb, stride_xh, stride_xr, heads, rows,
    DIM: tl.constexpr, PADDED_DIM: tl.constexpr, BLOCK_R: tl.constexpr,
):
    # Stage 1: the program's group (batch element, head) and its rows of Y.
    g = tl.program_id(1).to(tl.int64)
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, PADDED_DIM)
    r_in = offs_r < rows
    inside = r_in[:, None] & (offs_d < DIM)[None, :]
    # Stage 2: where each row comes from, then the rows themselves.
    source = tl.load(Order + g * rows + offs_r, mask=r_in, other=0).to(tl.int64)
    x_rows = X + (g // heads) * stride_xb + (g % heads) * stride_xh + source[:, None] * stride_xr + offs_d[None, :]
    tile = tl.load(x_rows, mask=inside, other=0.0)
    tl.store(Y + (g * rows + offs_r.to(tl.int64))[:, None] * DIM + offs_d[None, :], tile, mask=inside)
