"""The autograd rule of the attention op, shared by the op and the eager path.

Backward runs the backward op when the call was traced and the backward kernels directly
otherwise (`ctx.eager`). Importing this module registers the rule on `maskc::triton_attention`.
"""

from __future__ import annotations

from typing import Any

import torch

from .backward import attention_backward
from .ops import call_inputs, call_span, triton_attention, triton_attention_backward
from .plans import plan_by_key


def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Save what backward needs: the inputs, (out, lse), the positions, the run-time tensors, the plan's key
    and the plan."""
    q, k, v, plan, scale, q_starts, q_first, q_end, k_start, run_time = inputs
    ctx.save_for_backward(q, k, v, *output, q_starts, *run_time)
    ctx.plan, ctx.scale, ctx.positions = plan, scale, (q_first, q_end, k_start)
    # The backward pass finds the plan by its key: hold it, since a pattern resolved from q and k
    # for this call alone (a dynamic one) is gone by then.
    ctx.plan_object = plan_by_key(plan)


def backward(ctx: Any, d_out: torch.Tensor | None, d_lse: torch.Tensor | None) -> tuple[Any, ...]:
    """Gradients of q, k and v (none for the key, the scale, the positions and the run-time tensors)."""
    q, k, v, out, lse, q_starts, *run_time = ctx.saved_tensors
    d_out = torch.zeros_like(out) if d_out is None else last_dim_contiguous(d_out)
    d_lse = None if d_lse is None else d_lse.contiguous()
    if ctx.eager and not torch.compiler.is_compiling():
        span = call_span(ctx.plan_object, q, k, q_starts, *ctx.positions)
        inputs = getattr(ctx, "call_inputs", None) or call_inputs(ctx.plan, q, run_time)
        dq, dk, dv = attention_backward(ctx.plan_object, d_out, q, k, v, out, lse, d_lse, ctx.scale, span, inputs)
    else:
        dq, dk, dv = triton_attention_backward(
            d_out, q, k, v, out, lse, d_lse, ctx.plan, ctx.scale, q_starts, *ctx.positions, run_time
        )
    # The op's rule mirrors its inputs (a list for the run-time tensors); autograd.Function takes one None.
    no_grads = None if ctx.eager else [None] * len(run_time)
    return dq, dk, dv, None, None, None, None, None, None, no_grads


def _setup_op_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    setup_context(ctx, inputs, output)
    ctx.eager = False


triton_attention.register_autograd(backward, setup_context=_setup_op_context)


def last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()
