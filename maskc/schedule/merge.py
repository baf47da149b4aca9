"""Merging pass outputs by log-sum-exp, in torch: the CPU backend's merge and the reference of the Triton
backend's fused one (backends/triton/merge.py).

Pass p gives, for its rows (original queries `q_index_p`, possibly repeated across passes),
out_p = softmax over the pass's keys times v and lse_p. Over disjoint passes whose union is the
mask, lse = log Σ_p exp(lse_p) and out = Σ_p exp(lse_p − lse) · out_p exactly. A row no pass
reaches keeps lse = −inf and output zeros, as every backend gives for a row with no key.
"""

from __future__ import annotations

import torch


def merge_passes(
    outs: list[torch.Tensor], lses: list[torch.Tensor], q_indices: list[torch.Tensor], n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (..., n, D), lse (..., n)) from per-pass outputs (..., nq_p, D) and lses (..., nq_p).

    Differentiable; the running maximum is only a stabiliser and carries no gradient.
    """
    shape = lses[0].shape[:-1]
    top = torch.full((*shape, n), float("-inf"), dtype=lses[0].dtype, device=lses[0].device)
    for lse, index in zip(lses, q_indices):
        top = top.index_reduce(-1, index, lse.detach(), "amax")
    finite_top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.zeros_like(top)
    for lse, index in zip(lses, q_indices):
        total = total.index_add(-1, index, torch.exp(lse - finite_top.index_select(-1, index)))
    # where() passes no gradient to the branch it drops, but 0 · inf is NaN: both branches stay finite
    reached = total > 0
    lse = torch.where(reached, finite_top + torch.log(torch.where(reached, total, torch.ones_like(total))), top)
    # accumulated in the lse's precision (float32 at least), returned in the outputs' dtype
    out = torch.zeros((*shape, n, outs[0].shape[-1]), dtype=lse.dtype, device=outs[0].device)
    for part, part_lse, index in zip(outs, lses, q_indices):
        merged = lse.index_select(-1, index)
        live = torch.isfinite(part_lse)
        gap = torch.where(
            live, part_lse - torch.where(live, merged, torch.zeros_like(merged)), torch.zeros_like(merged)
        )
        weight = torch.where(live, torch.exp(gap), torch.zeros_like(part_lse))
        out = out.index_add(-2, index, weight.unsqueeze(-1) * part.to(lse.dtype))
    return out.to(outs[0].dtype), lse
