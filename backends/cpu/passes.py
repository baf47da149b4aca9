"""Running a compiled pattern pass by pass on the CPU, in dense torch, to check schedules.

The CPU reference itself runs on the plain mask; this executor permutes and gathers q, k and v
into each pass's order, attends on the pass's own element sets (its stored tiles, the rule
evaluated on original positions), and merges the passes by log-sum-exp. Its agreement with the
reference, forward and backward (torch autograd), is what the tests check. It builds each pass's
dense mask, so it is for small n.
"""

from __future__ import annotations

import torch

from maskc.calls import resolve_scale
from maskc.ir import CompiledPattern
from maskc.schedule import Pass, schedule_of
from maskc.schedule.merge import merge_passes


def pass_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Pass, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of one pass for one head: q (B, n, D), k and v (B, n, D) in original order."""
    index_q = torch.as_tensor(p.q_index, device=q.device)
    index_k = torch.as_tensor(p.k_index, device=q.device)
    mask = torch.as_tensor(p.dense_mask(), device=q.device)
    scores = (q.index_select(-2, index_q) @ k.index_select(-2, index_k).transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    weights = torch.where(mask, torch.exp(scores - safe.unsqueeze(-1)), torch.zeros_like(scores))
    return weights @ v.index_select(-2, index_k), lse


def attention_by_passes(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: CompiledPattern,
    scale: float | None = None,
    schedule: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, n, D), lse (B, H, n)) of q (B, H, n, D), k and v (B, Hkv, n, D), pass by pass."""
    heads, kv_heads, n = q.shape[1], k.shape[1], q.shape[2]
    scale = resolve_scale(scale, q.shape[-1])
    schedules = schedule_of(pattern, schedule)
    outs, lses = [], []
    for h in range(heads):
        layout = int(pattern.head_layout[h]) if pattern.heads == heads else 0
        kv = h // (heads // kv_heads)
        parts = [pass_attention(q[:, h], k[:, kv], v[:, kv], p, scale) for p in schedules[layout].passes]
        indices = [torch.as_tensor(p.q_index, device=q.device) for p in schedules[layout].passes]
        out, lse = merge_passes([o for o, _ in parts], [s for _, s in parts], indices, n)
        outs.append(out)
        lses.append(lse)
    return torch.stack(outs, dim=1), torch.stack(lses, dim=1)
