"""The differentiable operator: torch.library custom ops with fake implementations and autograd.

`maskc::triton_attention` returns (out, lse); its backward is the op `maskc::triton_attention_backward`.
Both are opaque to torch.compile, which traces them through their fake implementations, so a
compiled model keeps one graph. The pattern travels as its plan's key (operators take tensors,
numbers and strings only). When nothing traces the call, `EagerAttention` runs the same forward
and backward without the custom-op machinery, whose host time would dominate small problems.
`sparse_attention` prepares the inputs (autocast, head-dim padding to a power of two, a positive
scale) with differentiable torch ops around the operator.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from maskc.ir import CompiledPattern
from maskc.offsets import Offsets

from .backward import attention_backward
from .forward import attention_forward
from .plan import Plan, plan_by_key, plan_for, traced_key
from .span import Span

#: Smallest head dim a tensor-core product takes (inputs with fewer columns are zero-padded).
MIN_HEAD_DIM = 16


def _span(plan: Plan, q: torch.Tensor, k: torch.Tensor, q_starts: torch.Tensor | None, q_first: int, q_end: int,
          k_start: int) -> Span:  # fmt: skip
    """Where the call's rows sit: queries from q_first (or q_starts per batch element), keys from k_start."""
    m, nk = q.shape[2], k.shape[2]
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of block-sparse attention; scale > 0, head dims powers of two.

    Queries are positions q_first … q_end − 1 (q_starts: one start per batch element, if given),
    keys k_start … k_start + nk − 1 of the pattern's n (0 … n − 1 for full-length calls).
    """
    found = plan_by_key(plan)
    return attention_forward(found, q, k, v, scale, _span(found, q, k, q_starts, q_first, q_end, k_start))


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv); d_lse is the gradient of the returned lse when it was used."""
    found = plan_by_key(plan)
    span = _span(found, q, k, q_starts, q_first, q_end, k_start)
    return attention_backward(found, d_out, q, k, v, out, lse, d_lse, scale, span)


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    q, k, v, plan, scale, q_starts, *positions = inputs
    ctx.save_for_backward(q, k, v, *output, q_starts)
    ctx.plan, ctx.scale, ctx.positions = plan, scale, positions
    # The backward pass finds the plan by its key: hold it, since a pattern resolved from q and k
    # for this call alone (a dynamic one) is gone by then.
    ctx.plan_object = plan_by_key(plan)


def _backward(ctx: Any, d_out: torch.Tensor | None, d_lse: torch.Tensor | None) -> tuple[Any, ...]:
    q, k, v, out, lse, q_starts = ctx.saved_tensors
    d_out = torch.zeros_like(out) if d_out is None else _last_dim_contiguous(d_out)
    d_lse = None if d_lse is None else d_lse.contiguous()
    if ctx.eager and not torch.compiler.is_compiling():
        span = _span(ctx.plan_object, q, k, q_starts, *ctx.positions)
        dq, dk, dv = attention_backward(ctx.plan_object, d_out, q, k, v, out, lse, d_lse, ctx.scale, span)
    else:
        dq, dk, dv = triton_attention_backward(
            d_out, q, k, v, out, lse, d_lse, ctx.plan, ctx.scale, q_starts, *ctx.positions
        )
    return dq, dk, dv, None, None, None, None, None, None


def _setup_op_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
    _setup_context(ctx, inputs, output)
    ctx.eager = False


triton_attention.register_autograd(_backward, setup_context=_setup_op_context)


class EagerAttention(torch.autograd.Function):
    """The operators' forward and backward, called directly when nothing traces the call.

    Outside torch.compile the custom-op machinery (dispatch, its autograd wrapper, output checks)
    costs more host time per call than a small problem's kernels run; this path skips it. An
    unused lse gradient stays None instead of a tensor of zeros. Differentiable once, like the
    ops: a second derivative raises instead of silently missing terms.
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: str, scale: float,
                q_starts: torch.Tensor | None, q_first: int, q_end: int, k_start: int) -> Any:  # fmt: skip
        ctx.set_materialize_grads(False)
        found = plan_by_key(plan)
        output = attention_forward(found, q, k, v, scale, _span(found, q, k, q_starts, q_first, q_end, k_start))
        _setup_context(ctx, (q, k, v, plan, scale, q_starts, q_first, q_end, k_start), output)
        ctx.eager = True
        return output

    backward = staticmethod(once_differentiable(_backward))


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _padded(x: torch.Tensor) -> torch.Tensor:
    """x with its last dim zero-padded to a power of two (at least MIN_HEAD_DIM): scores and values keep."""
    size = x.shape[-1]
    target = max(MIN_HEAD_DIM, 1 << (size - 1).bit_length())
    return _last_dim_contiguous(x) if target == size else F.pad(x, (0, target - size))


def _traced(*tensors: torch.Tensor) -> bool:
    """Whether the call is being traced (torch.compile, make_fx, aot_function): tracers see
    fake tensors, which only the custom op's fake implementation can take."""
    plain = all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors)
    return torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() > 0 or not plain


def _plan_key(pattern: CompiledPattern) -> str:
    """The plan's key; under torch.compile one read off the pattern's attributes, which traces."""
    if torch.compiler.is_compiling():
        return traced_key(pattern)
    return plan_for(pattern).key


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: CompiledPattern,
    scale: float,
    offsets: Offsets | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) for a static pattern: autocast applied, head dims padded, the scale made positive.

    `offsets` places a rectangular call's rows among the pattern's positions (maskc.offsets).

    softmax(s · q kᵀ) is softmax(|s| · (sign(s) q) kᵀ), so a negative scale flips q and a zero
    scale zeroes it; the kernels then only see positive scales.
    """
    device = q.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if scale <= 0:
        q, scale = (-q, -scale) if scale < 0 else (q * 0, 1.0)
    value_dim = v.shape[-1]
    operator = triton_attention if _traced(q, k, v) else EagerAttention.apply
    positions = _positions(offsets, q) if offsets is not None else (None, 0, q.shape[2], 0)
    out, lse = operator(_padded(q), _padded(k), _padded(v), _plan_key(pattern), scale, *positions)
    return out[..., :value_dim], lse


def _positions(offsets: Offsets, q: torch.Tensor) -> tuple[torch.Tensor | None, int, int, int]:
    """(q_starts tensor or None, first query position, end of the query positions, k_start) of a call."""
    starts = None
    if not offsets.uniform:
        given = offsets.q_tensor
        starts = (given if given is not None else torch.as_tensor(offsets.q_starts)).to(q.device, torch.int32)
    return starts, offsets.q_first, offsets.q_end, offsets.k_start
