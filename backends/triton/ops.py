"""The torch.library custom ops, with fake implementations for tracing.

`maskc::triton_attention` returns (out, lse); its backward is the op `maskc::triton_attention_backward`.
Both are opaque to torch.compile, which traces them through their fake implementations, so a
compiled model keeps one graph. The pattern travels as its plan's key (operators take tensors,
numbers and strings only; `plans.py`). Their autograd rule is registered in `autograd.py`.
"""

from __future__ import annotations

import torch

from .backward import attention_backward
from .forward import attention_forward
from .plan import Plan
from .plans import plan_by_key
from .reuse import documents_inputs
from .runtime import CallInputs
from .span import Span


def call_inputs(plan: str, q: torch.Tensor, inputs: list[torch.Tensor], reuse: bool = False) -> CallInputs | None:
    """The call's run-time tensors by key (the plan's `input_keys` order), or None for a static layout.
    With `reuse` (the eager path only), those of a documents tensor's remembered layout come with the
    tables already built from them (`reuse.py`)."""
    found = plan_by_key(plan)
    if not found.run_time:
        return None
    batch, heads, n, _ = q.shape

    def made() -> CallInputs:
        return CallInputs(batch, heads, n, dict(zip(found.input_keys, inputs)))

    if not (reuse and found.documents_only and inputs):
        return made()
    return documents_inputs(found.last_documents, inputs, (batch, heads, n), made)


def call_span(plan: Plan, q: torch.Tensor, k: torch.Tensor, q_starts: torch.Tensor | None, q_first: int,
              q_end: int, k_start: int) -> Span:  # fmt: skip
    """Where the call's rows sit: queries from q_first (or q_starts per batch element), keys from k_start."""
    m, nk = q.shape[2], k.shape[2]
    if q_starts is None and q_first == k_start == 0 and q_end == m == nk == plan.n:
        return Span.full(plan.n)
    return Span(n=plan.n, q_len=m, q_first=q_first, q_end=q_end, k_start=k_start, k_end=k_start + nk, q_starts=q_starts)


@torch.library.custom_op("maskc::triton_attention", mutates_args=())
def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: str,
    scale: float,
    q_starts: torch.Tensor | None,
    q_first: int,
    q_end: int,
    k_start: int,
    inputs: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of block-sparse attention; scale > 0, head dims powers of two.

    Queries are positions q_first … q_end − 1 (q_starts: one start per batch element, if given),
    keys k_start … k_start + nk − 1 of the pattern's n (0 … n − 1 for full-length calls).
    `inputs`: the run-time tensors a per-call layout is built from (documents, selections,
    labels), else empty; such calls are full-length.
    """
    found = plan_by_key(plan)
    span = call_span(found, q, k, q_starts, q_first, q_end, k_start)
    return attention_forward(found, q, k, v, scale, span, call_inputs(plan, q, inputs))


@triton_attention.register_fake
def _(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: str,
    scale: float,
    q_starts: torch.Tensor | None,
    q_first: int,
    q_end: int,
    k_start: int,
    inputs: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, heads, n, _ = q.shape
    return q.new_empty((batch, heads, n, v.shape[-1])), q.new_empty((batch, heads, n), dtype=torch.float32)


@torch.library.custom_op("maskc::triton_attention_backward", mutates_args=())
def triton_attention_backward(
    d_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    d_lse: torch.Tensor | None,
    plan: str,
    scale: float,
    q_starts: torch.Tensor | None,
    q_first: int,
    q_end: int,
    k_start: int,
    inputs: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv); d_lse is the gradient of the returned lse when it was used."""
    found = plan_by_key(plan)
    span = call_span(found, q, k, q_starts, q_first, q_end, k_start)
    return attention_backward(found, d_out, q, k, v, out, lse, d_lse, scale, span, call_inputs(plan, q, inputs))


@triton_attention_backward.register_fake
def _(
    d_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    d_lse: torch.Tensor | None,
    plan: str,
    scale: float,
    q_starts: torch.Tensor | None,
    q_first: int,
    q_end: int,
    k_start: int,
    inputs: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
