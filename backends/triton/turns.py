"""A schedule whose passes all read q, k, v as they are, run in turn: no merge, forward or backward.

When every pass of a schedule reads q, k and v in token order or in place (`passes.py`: residue and
tiled orders over all n positions), every pass writes its output rows in token order, and the
passes' pairs are disjoint. Then a pass can go on from the (out, lse) the earlier ones left, as one
flash-attention row goes on from its earlier key tiles (`kernels/forward.py` `continued_state`: a
finished (out, lse) is the running state m = lse · log2 e (the kernels' base 2), l = 1, acc = out),
and the last pass leaves the schedule's output: no merge kernel. Backward uses the rows' terms of
the final out and lse (delta = rowsum(dO ∘ O) − dlse, and lse itself) for every pass: each pass's
dK, dV and dQ are then its exact share of the gradient, and each later pass adds its share to the
earlier ones' in its kernels' stores (`ACCUMULATE`). What goes: the merge's forward and backward
kernels, a preparation kernel per pass, and autograd's additions of the passes' gradients.
MASKC_TRITON_PASSES_IN_TURN=0 merges instead, for comparisons.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .autograd import last_dim_contiguous
from .backward import attention_backward, prepare_rows
from .forward import attention_forward
from .plan import Plan


def in_turn_enabled() -> bool:
    """Whether schedules whose passes read q, k, v as they are run in turn (MASKC_TRITON_PASSES_IN_TURN, default 1)."""
    return os.environ.get("MASKC_TRITON_PASSES_IN_TURN", "1") != "0"


def forward_in_turn(
    plans: tuple[Plan, ...], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of the passes run in turn, each going on from the last."""
    found = None
    for plan in plans:
        found = attention_forward(plan, q, k, v, scale, earlier=found)
    return found


class PassesInTurn(torch.autograd.Function):
    """The passes run in turn, differentiable once (a second derivative raises, as for one pass)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plans: tuple[Plan, ...],
                scale: float) -> Any:  # fmt: skip
        ctx.set_materialize_grads(False)
        out, lse = forward_in_turn(plans, q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plans, ctx.scale = plans, scale
        return out, lse

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: torch.Tensor | None, d_lse: torch.Tensor | None) -> tuple[Any, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        d_out = torch.zeros_like(out) if d_out is None else last_dim_contiguous(d_out)
        d_lse = None if d_lse is None else d_lse.contiguous()
        prepared = prepare_rows(ctx.plans[0], out, d_out, lse, d_lse)
        grads = None
        for plan in ctx.plans:
            grads = attention_backward(plan, d_out, q, k, v, out, lse, d_lse, ctx.scale, prepared=prepared, into=grads)
        return (*grads, None, None)
