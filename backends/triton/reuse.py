"""A run-time layout built from documents serves every later call with the same documents tensor.

The layers of a model receive the same `documents` tensor in one step. What a layout decided by the
documents alone builds per call (the document numbers, per-document memberships, every walk's tile
tables) depends only on that tensor, the pattern and the call's sizes, so the first layer's build
serves the others, as a FlexAttention block mask built once per batch does. Each plan remembers, for
the last documents tensor it was called with (`maskc.tensor_memo`: the same object at the same
version; an in-place change rebuilds, writes through `.data` or from outside torch are not seen), the
tensors made from it and, by call size, the tables built from those; all of it is dropped when that
tensor is freed.

Only the eager path reuses. Not reused: patterns with leaves decided by q and k (top-k, clusters:
every call decides anew); the custom op run by torch.compile or another tracer (a compiled graph may
refill one tensor object with new values without moving its version); calls inside a CUDA graph
capture (the graph builds its own tables, in memory it owns, since one remembered here could be
replaced while the graph still reads it); and every call with MASKC_REUSE_LAYOUT=0. Calls under
torch.inference_mode use what was built outside it but keep nothing (their tensors could not be
saved for a later call's backward). Tables are made on the stream of the call that builds them; a
call on another stream should follow that one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from maskc.errors import BackendError
from maskc.rules import Rule
from maskc.tensor_memo import LastTensor
from maskc.tracing import capturing, tracing_mode

from .runtime import CallInputs

#: Set to 0 to build a run-time layout on every call.
REUSE_LAYOUT = "MASKC_REUSE_LAYOUT"


@dataclass
class DocumentsLayout:
    """What one documents tensor decided for a plan: the per-call tensors made from it (by the plan's
    input keys), and the call inputs holding the tables built from them, by (batch, heads, n)."""

    run_time: list[torch.Tensor]
    calls: dict[tuple[int, int, int], CallInputs] = field(default_factory=dict)


def decided_by_documents(rules: Sequence[Rule]) -> bool:
    """Whether every leaf decided per call is decided by the documents alone (none by q and k)."""
    leaves = [leaf for rule in rules for leaf in rule.leaves() if leaf.dynamic]
    return bool(leaves) and all(getattr(leaf, "decided_by", None) == "documents" for leaf in leaves)


def documents_tensors(
    memo: LastTensor, documents: torch.Tensor, size: tuple[int, int], make: Callable[[], list[torch.Tensor]]
) -> list[torch.Tensor]:
    """The per-call tensors of `documents` ((batch, n) = `size`): those remembered for this very tensor,
    else `make()`, remembered when the call may keep them."""
    if not may_reuse(documents.device):
        return make()
    found = memo.get(documents, size)
    if found is not None:
        return found.run_time
    run_time = make()
    if not torch.is_inference_mode_enabled():
        memo.put(documents, DocumentsLayout(run_time), size)
    return run_time


def documents_inputs(
    memo: LastTensor, run_time: list[torch.Tensor], size: tuple[int, int, int], make: Callable[[], CallInputs]
) -> CallInputs:
    """The call inputs of `run_time` when it is the list `documents_tensors` remembered (the same list
    object), kept by call size with the tables built into them; else `make()`."""
    layout = memo.held()
    if layout is None or layout.run_time is not run_time or not may_reuse(run_time[0].device):
        return make()
    found = layout.calls.get(size)
    if found is None:
        found = make()
        if not torch.is_inference_mode_enabled():
            layout.calls[size] = found
    return found


def may_reuse(device: torch.device) -> bool:
    """Not under a tracer or torch.compile, not inside a capture, and not turned off."""
    chosen = os.environ.get(REUSE_LAYOUT, "")
    if chosen not in ("", "0", "1"):
        raise BackendError(f"{REUSE_LAYOUT} must be 0 or 1, got {chosen!r}")
    if chosen == "0":
        return False
    return not (torch.compiler.is_compiling() or tracing_mode() or capturing(device))
