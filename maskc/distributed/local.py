"""What every context-parallel mode shares: the call's job, one local attention call, and the
merge of partial outputs over disjoint key sets by log-sum-exp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from maskc.attention import attention as sparse_attention
from maskc.distributed.comm import Group
from maskc.distributed.planner import Plan
from maskc.ir import CompiledPattern


@dataclass(frozen=True)
class Job:
    """One call: the plan, the group, the pattern, the score scale and the backend of the local calls."""

    plan: Plan
    group: Group
    pattern: CompiledPattern
    scale: Any
    backend: str = "auto"


def local_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, job: Job, q_offset: int, k_offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of queries at positions q_offset… against keys at k_offset… under the full pattern."""
    return sparse_attention(
        q, k, v, job.pattern, job.backend, scale=job.scale, return_lse=True, q_offset=q_offset, k_offset=k_offset
    )


def merge(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax outputs over two disjoint key sets merged into the output over their union, by lse.

    Rows with no key in either set (lse = −inf in both) stay zero with lse = −inf, with zero
    gradients rather than NaN.
    """
    peak = torch.maximum(lse_a, lse_b)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    weight_a, weight_b = torch.exp(lse_a - peak), torch.exp(lse_b - peak)
    total = weight_a + weight_b
    some = total > 0
    safe = torch.where(some, total, torch.ones_like(total))
    lse = torch.where(some, peak + torch.log(safe), torch.full_like(total, float("-inf")))
    dtype = lse.dtype
    out = (weight_a[..., None] * out_a.to(dtype) + weight_b[..., None] * out_b.to(dtype)) / safe[..., None]
    return out.to(out_a.dtype), lse
