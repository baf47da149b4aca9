"""The autograd Function tying the forward and backward passes together."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .backward import attention_backward
from .forward import attention_forward
from .rectangular import RectangularJob, rectangular_backward, rectangular_forward
from .work import Job


def _passes(job: Job | RectangularJob) -> tuple[Any, Any]:
    """The forward and backward functions of a job: square calls, or rectangular ones."""
    if isinstance(job, RectangularJob):
        return rectangular_forward, rectangular_backward
    return attention_forward, attention_backward


def _array(x: torch.Tensor, job: Job | RectangularJob) -> np.ndarray:
    """A contiguous numpy array in the compute dtype (no copy when x already is one)."""
    return x.detach().to(job.dtype).contiguous().numpy()


class SparseAttention(torch.autograd.Function):
    """(q, k, v) → (output in the input dtype, lse in the compute dtype); both differentiable."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, job: Job) -> tuple[torch.Tensor, ...]:
        forward = _passes(job)[0]
        out, lse = (torch.from_numpy(x) for x in forward(job, *(_array(x, job) for x in (q, k, v))))
        ctx.job = job
        ctx.save_for_backward(q, k, v, lse, out)
        return out.to(q.dtype), lse

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: torch.Tensor, d_lse: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        job = ctx.job
        q, k, v, lse, out = ctx.saved_tensors
        arrays = (_array(x, job) for x in (q, k, v, lse, out, d_out, d_lse))
        dq, dk, dv = (torch.from_numpy(x) for x in _passes(job)[1](job, *arrays))
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None
