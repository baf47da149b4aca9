"""Reference for rectangular calls: float64 dense attention on the slice of the full brute-force mask."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st


def sliced_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: np.ndarray,
    q_starts: list[int],
    k_start: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per batch element b: rows q_starts[b] … + m, columns k_start … + nk of `mask` ((n, n) or (heads, n, n)).

    Rows with no key give zeros and lse = −inf. Differentiable (float64 in, float64 out).
    """
    m, nk = q.shape[2], k.shape[2]
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    full = torch.as_tensor(np.asarray(mask))
    outs, lses = [], []
    for b in range(q.shape[0]):
        part = full[..., q_starts[b] : q_starts[b] + m, k_start : k_start + nk].expand(q.shape[1], m, nk)
        empty = ~part.any(dim=-1)
        scores = (q[b] @ k[b].transpose(-1, -2)) * scale
        scores = scores.masked_fill(~part, -torch.inf).masked_fill(empty[..., None], 0.0)
        lse = torch.logsumexp(scores, dim=-1)
        probs = torch.exp(scores - lse[..., None]).masked_fill(~part, 0.0)
        outs.append(probs @ v[b])
        lses.append(lse.masked_fill(empty, -torch.inf))
    return torch.stack(outs), torch.stack(lses)


@st.composite
def slices(draw: st.DrawFn, n: int, batch: int) -> tuple[int, int, int, object]:
    """(m, nk, k_offset, q_offset) valid at n: q_offset None (bottom-right), an int or a list per batch element."""
    nk = draw(st.integers(1, n))
    k_start = draw(st.integers(0, n - nk))
    kind = draw(st.sampled_from(["default", "int", "per-batch"]))
    if kind == "default":
        m = draw(st.integers(1, k_start + nk))
        return m, nk, k_start, None
    m = draw(st.integers(1, n))
    starts = [draw(st.integers(0, n - m)) for _ in range(batch if kind == "per-batch" else 1)]
    return m, nk, k_start, (starts if kind == "per-batch" else starts[0])


def q_starts_of(q_offset: object, batch: int, m: int, nk: int, k_start: int) -> list[int]:
    if q_offset is None:
        return [k_start + nk - m] * batch
    if isinstance(q_offset, list):
        return q_offset
    return [int(q_offset)] * batch
