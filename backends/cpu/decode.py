"""Decoding over a KV cache on the CPU: dense attention over the cache's slots, masked by the rule
evaluated on each slot's true position (slots of a rolling buffer are not in position order)."""

from __future__ import annotations

import numpy as np
import torch

from maskc.calls import resolve_scale
from maskc.errors import BackendError
from maskc.ir import CompiledPattern

from .checks import compute_dtype, head_layouts


def slot_mask(
    pattern: CompiledPattern, heads: int, q_positions: np.ndarray, positions: np.ndarray, m: int
) -> np.ndarray:
    """(B, H, m, slots): query row a of sequence b (position q_positions[b] + a) may read slot c."""
    index = head_layouts(pattern, heads)
    rows = q_positions[:, None] + np.arange(m)[None, :]
    filled = positions >= 0
    keys = np.where(filled, positions, 0)
    per_layout = [
        layout.rule.mask(rows[:, :, None], keys[:, None, :]) & filled[:, None, :] for layout in pattern.layouts
    ]
    return np.stack([per_layout[int(index[h])] for h in range(heads)], axis=1)


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    q_positions: torch.Tensor,
    pattern: CompiledPattern,
    *,
    scale: float | None = None,
    slot_counts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, m, Dv) in q's dtype, lse (B, H, m)); rows with no readable slot give zeros and −inf.

    Every slot is read: empty ones hold position −1 (`slot_counts` is a hint kernels use).
    """
    _, heads, m, head_dim = q.shape
    if heads % k.shape[1]:
        raise BackendError(f"q has {heads} heads, not a multiple of the cache's {k.shape[1]} key/value heads")
    dtype = compute_dtype(q.dtype)
    group = heads // k.shape[1]
    mask = torch.from_numpy(slot_mask(pattern, heads, q_positions.cpu().numpy(), positions.cpu().numpy(), m))
    keys = k.to(dtype).repeat_interleave(group, dim=1)
    values = v.to(dtype).repeat_interleave(group, dim=1)
    scores = (q.to(dtype) @ keys.transpose(-1, -2)) * resolve_scale(scale, head_dim)
    scores = scores.masked_fill(~mask, -torch.inf)
    lse = torch.logsumexp(scores, dim=-1)
    empty = torch.isinf(lse)
    probs = torch.exp(scores - lse.masked_fill(empty, 0.0)[..., None])
    return (probs @ values).to(q.dtype), lse
