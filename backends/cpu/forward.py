"""Forward pass: sampled scores, a numerically stable softmax per row segment, the sparse product with V."""

from __future__ import annotations

import numpy as np

from .plan import ChunkPlan, as_tiles
from .work import Job


def attention_forward(job: Job, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Output (B, H, N, Dv) and log-sum-exp (B, H, N), in the dtype of the inputs.

    Rows with no key keep a zero output and lse = −inf.
    """
    shape = job.shape
    out = np.zeros((shape.batch, shape.heads, shape.n, shape.value_dim), dtype=q.dtype)
    lse = np.full((shape.batch, shape.heads, shape.n), -np.inf, dtype=q.dtype)
    for layout, tasks in job.groups:
        q_tiles, k_tiles = as_tiles(q, layout.grid.block_m), as_tiles(k, layout.grid.block_n)
        for plan in job.chunks(layout):
            for b, h, g in tasks:
                scores = plan.sampled_products(q_tiles[b, h], k_tiles[b, g])
                scores *= job.scale
                probs, row_lse = row_softmax(plan, scores)
                out[b, h, plan.row_lo : plan.row_hi] = plan.matrix(probs) @ v[b, g]
                lse[b, h, plan.row_lo + plan.rows] = row_lse
    return out, lse


def row_softmax(plan: ChunkPlan, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over each row's elements (in place), and the log-sum-exp of each row with a key."""
    if plan.nnz == 0:
        return scores, scores[:0]
    peak = np.maximum.reduceat(scores, plan.starts)
    scores -= np.repeat(peak, plan.counts)
    probs = np.exp(scores, out=scores)
    total = np.add.reduceat(probs, plan.starts)
    probs /= np.repeat(total, plan.counts)
    return probs, peak + np.log(total)
