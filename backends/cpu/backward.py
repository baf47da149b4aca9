"""Backward pass: exact dQ, dK, dV from the same chunk plans, recomputing the probabilities from lse.

With P the probabilities, O the output and dO its gradient, dS = P ∘ (dP − rowsum(dO ∘ O) + dlse),
dP = dO Vᵀ at the elements; dQ = scale · dS K, dK = scale · dSᵀ Q, dV = Pᵀ dO. Keys and values
shared by a group of query heads collect the gradients of the whole group.
"""

from __future__ import annotations

import numpy as np

from .plan import as_tiles
from .work import Job


def attention_backward(
    job: Job,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    lse: np.ndarray,
    out: np.ndarray,
    d_out: np.ndarray,
    d_lse: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dq, dk, dv), in the dtype of the inputs."""
    row_terms = np.einsum("bhnd,bhnd->bhn", d_out, out) - d_lse
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for layout, tasks in job.groups:
        q_tiles, k_tiles = as_tiles(q, layout.grid.block_m), as_tiles(k, layout.grid.block_n)
        do_tiles, v_tiles = as_tiles(d_out, layout.grid.block_m), as_tiles(v, layout.grid.block_n)
        for plan in job.chunks(layout):
            rows = slice(plan.row_lo, plan.row_hi)
            for b, h, g in tasks:
                scores = plan.sampled_products(q_tiles[b, h], k_tiles[b, g])
                scores *= job.scale
                scores -= plan.per_element(lse[b, h, rows])
                probs = np.exp(scores, out=scores)
                d_scores = plan.sampled_products(do_tiles[b, h], v_tiles[b, g])
                d_scores -= plan.per_element(row_terms[b, h, rows])
                d_scores *= probs
                d_scores *= job.scale
                d_scaled = plan.matrix(d_scores)
                dq[b, h, rows] = d_scaled @ k[b, g]
                dk[b, g] += d_scaled.T @ q[b, h, rows]
                dv[b, g] += plan.matrix(probs).T @ d_out[b, h, rows]
    return dq, dk, dv
