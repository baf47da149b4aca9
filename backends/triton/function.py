"""The entry of the differentiable operator: inputs prepared, then the custom op or the eager path.

`sparse_attention` prepares the inputs (autocast, head-dim padding to a power of two, a positive
scale) with differentiable torch ops around the operator. A traced call (torch.compile, make_fx)
takes the custom op (`ops.py`, its autograd in `autograd.py`); otherwise `EagerAttention`
(`eager.py`) runs the same forward and backward without the custom-op machinery, whose host time
would dominate small problems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd import forward_ad

from maskc.calls import resolve_scale
from maskc.errors import BackendError
from maskc.ir import CompiledPattern
from maskc.offsets import Offsets
from maskc.tracing import tracing_mode

from .autograd import last_dim_contiguous
from .checks import unsupported_reason
from .decode import decode_attention
from .eager import EagerAttention, eager_forward
from .ops import triton_attention
from .plans import plan_for, traced_key
from .reuse import documents_tensors
from .runtime import CallInputs, needs_runtime_layout

#: Smallest head dim a tensor-core product takes (inputs with fewer columns are zero-padded).
MIN_HEAD_DIM = 16


def _padded(x: torch.Tensor) -> torch.Tensor:
    """x with its last dim zero-padded to a power of two (at least MIN_HEAD_DIM): scores and values keep."""
    size = x.shape[-1]
    target = max(MIN_HEAD_DIM, 1 << (size - 1).bit_length())
    return last_dim_contiguous(x) if target == size else F.pad(x, (0, target - size))


def _traced(*tensors: torch.Tensor) -> bool:
    """Whether the call is being traced (torch.compile, make_fx, aot_function): tracers see
    fake tensors, which only the custom op's fake implementation can take."""
    plain = all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors)
    return torch.compiler.is_compiling() or tracing_mode() or not plain


def _needs_no_derivative(*tensors: torch.Tensor) -> bool:
    """Whether no gradient can be asked of the call: grad mode off or no input requiring one, and no
    input carrying a forward-mode tangent, which the autograd function refuses rather than drops."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return all(forward_ad.unpack_dual(t).tangent is None for t in tensors)


def _plan_key(pattern: CompiledPattern) -> str:
    """The plan's key; under torch.compile one read off the pattern's attributes, which traces."""
    if torch.compiler.is_compiling():
        return traced_key(pattern)
    return plan_for(pattern).key


def run_time_tensors(
    pattern: CompiledPattern,
    q: torch.Tensor,
    k: torch.Tensor,
    documents: torch.Tensor | None,
    centroids: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """The tensors a run-time layout is built from, by sorted key (the plan's `input_keys`); none for
    a static pattern. Torch ops on q's device: nothing is read back to the host."""
    rules = [layout.rule for layout in pattern.layouts]
    if not needs_runtime_layout(rules):
        return []

    def made() -> list[torch.Tensor]:
        values = CallInputs.prepare(rules, q, k, documents, centroids).values
        return [values[key] for key in sorted(values)]

    plan = None if torch.compiler.is_compiling() else plan_for(pattern)
    if plan is None or not plan.documents_only or documents is None:
        return made()
    # the same documents tensor again (a model's next layer): the same tensors, so its tables serve too
    return documents_tensors(plan.last_documents, documents, (q.shape[0], q.shape[2]), made)


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: CompiledPattern,
    scale: float,
    documents: torch.Tensor | None = None,
    offsets: Offsets | None = None,
    centroids: torch.Tensor | None = None,
    run_time: list[torch.Tensor] | None = None,
    plan_key: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse): autocast applied, head dims padded, the scale made positive; a pattern decided at
    run time (documents, top-k, clusters) gets its tables from `documents`, q and k on the device
    (or from `run_time`, the tensors by the plan's `input_keys`, when the caller made them). `plan_key`,
    when given, names the plan to run instead of the pattern's own.

    `offsets` places a rectangular call's rows among the pattern's positions (maskc.offsets).

    softmax(s · q kᵀ) is softmax(|s| · (sign(s) q) kᵀ), so a negative scale flips q and a zero
    scale zeroes it; the kernels then only see positive scales. Run-time selections are made from
    q and k as given, before that.
    """
    if run_time is None:
        run_time = run_time_tensors(pattern, q, k, documents, centroids)
    call = PreparedCall.of(q, k, v, scale)
    positions = _positions(offsets, q) if offsets is not None else (None, 0, q.shape[2], 0)
    out, lse = call.operator(call.q, call.k, call.v, plan_key or _plan_key(pattern), call.scale, *positions, run_time)
    return call.output(out), lse


@dataclass(frozen=True)
class PreparedCall:
    """q, k, v as the operators take them (autocast applied, head dims padded, the scale made
    positive), the operator that runs them, and the value dim to cut the output back to. Made once
    per call: a scheduled pattern runs its passes' operators on gathers of these."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float
    value_dim: int
    operator: Callable[..., tuple[torch.Tensor, torch.Tensor]]

    @classmethod
    def of(cls, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> PreparedCall:
        device = q.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        if scale <= 0:
            q, scale = (-q, -scale) if scale < 0 else (q * 0, 1.0)
        if _traced(q, k, v):
            operator = triton_attention
        elif _needs_no_derivative(q, k, v):
            operator = eager_forward
        else:
            operator = EagerAttention.apply
        return cls(_padded(q), _padded(k), _padded(v), scale, v.shape[-1], operator)

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """out (…, padded value dim) cut back to the inputs' value dim."""
        return out if out.shape[-1] == self.value_dim else out[..., : self.value_dim]


def _positions(offsets: Offsets, q: torch.Tensor) -> tuple[torch.Tensor | None, int, int, int]:
    """(q_starts tensor or None, first query position, end of the query positions, k_start) of a call."""
    starts = None
    if not offsets.uniform:
        given = offsets.q_tensor
        starts = (given if given is not None else torch.as_tensor(offsets.q_starts)).to(q.device, torch.int32)
    return starts, offsets.q_first, offsets.q_end, offsets.k_start


@torch.no_grad()
def decode_step(
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
    """(out, lse) of a decoding step over cache slots [0, slot_counts[b]) (all by default).

    The call is checked, head dims padded and the scale made positive, as for `sparse_attention`.
    """
    reason = unsupported_reason(q, k, v, pattern)
    if reason is not None:
        raise BackendError(reason)
    if pattern.dynamic:
        raise BackendError(f"pattern {pattern.spec.name!r} is decided at run time; decoding needs a static one")
    if q.shape[1] % k.shape[1]:
        raise BackendError(f"q has {q.shape[1]} heads, not a multiple of the cache's {k.shape[1]} key/value heads")
    scale = resolve_scale(scale, q.shape[-1])
    if scale <= 0:
        q, scale = (-q, -scale) if scale < 0 else (q * 0, 1.0)
    if slot_counts is None:
        slot_counts = torch.full((q.shape[0],), k.shape[2], dtype=torch.int32, device=q.device)
    index = (positions.to(torch.int32), q_positions.to(q.device, torch.int32), slot_counts.to(q.device, torch.int32))
    out, lse = decode_attention(plan_for(pattern), _padded(q), _padded(k.to(q.dtype)), _padded(v.to(q.dtype)), *index,
                                scale)  # fmt: skip
    return out[..., : v.shape[-1]], lse
