"""The eager path: an autograd function that runs the kernels without the custom-op machinery."""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .autograd import backward, setup_context
from .forward import attention_forward
from .ops import call_inputs, call_span
from .plans import plan_by_key


class EagerAttention(torch.autograd.Function):
    """The operators' forward and backward, called directly when nothing traces the call.

    Outside torch.compile the custom-op machinery (dispatch, its autograd wrapper, output checks)
    costs more host time per call than a small problem's kernels run; this path skips it. An
    unused lse gradient stays None instead of a tensor of zeros. Differentiable once, like the
    ops: a second derivative raises instead of silently missing terms.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: str, scale: float,
                q_starts: torch.Tensor | None, q_first: int, q_end: int, k_start: int,
                run_time: list) -> Any:  # fmt: skip
        ctx.set_materialize_grads(False)
        inputs = call_inputs(plan, q, run_time, reuse=True)
        output = _forward(q, k, v, plan, scale, q_starts, q_first, q_end, k_start, inputs)
        setup_context(ctx, (q, k, v, plan, scale, q_starts, q_first, q_end, k_start, run_time), output)
        ctx.eager = True
        ctx.call_inputs = inputs  # a run-time layout's tables, built by the forward, serve the backward
        return output

    backward = staticmethod(once_differentiable(backward))


@torch.no_grad()
def eager_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: str, scale: float,
                  q_starts: torch.Tensor | None, q_first: int, q_end: int, k_start: int,
                  run_time: list) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(out, lse) of the forward kernels alone: what a call that needs no gradient runs, without the
    autograd function's bookkeeping (its host time is the GPU's idle time on small problems)."""
    inputs = call_inputs(plan, q, run_time, reuse=True)
    return _forward(q, k, v, plan, scale, q_starts, q_first, q_end, k_start, inputs)


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: str, scale: float,
             q_starts: torch.Tensor | None, q_first: int, q_end: int, k_start: int,
             inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    found = plan_by_key(plan)
    span = call_span(found, q, k, q_starts, q_first, q_end, k_start)
    return attention_forward(found, q, k, v, scale, span, inputs)
