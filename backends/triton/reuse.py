"""A run-time layout built from documents serves every later call with the same documents tensor.

The layers of a model receive the same `documents` tensor in one step. What a layout decided by the
documents alone builds per call (the document numbers, per-document memberships, every walk's tile
tables) depends only on that tensor, the pattern and the call's sizes, so the first layer's build
serves the others, as a FlexAttention block mask built once per batch does. Each plan remembers the
last documents tensor it was called with (`maskc.tensor_memo`: the same object at the same version;
an in-place change rebuilds, writes through `.data` or from outside torch are not seen) and what was
built from it.

Not reused: patterns with leaves decided by q and k (top-k, clusters: every call decides anew);
calls under torch.compile or another tracer (the compiled graph builds per call); calls inside a CUDA
graph capture (the graph builds its own tables, in memory it owns, since one remembered here could
be replaced while the graph still reads it); and every call with MASKC_REUSE_LAYOUT=0. Tables are
made on the stream of the call that builds them; a call on another stream should follow that one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from maskc.errors import BackendError
from maskc.rules import Rule
from maskc.tensor_memo import LastTensor, Tensors
from maskc.tracing import capturing, tracing_mode

#: Set to 0 to build a run-time layout on every call.
REUSE_LAYOUT = "MASKC_REUSE_LAYOUT"

T = TypeVar("T")


def decided_by_documents(rules: Sequence[Rule]) -> bool:
    """Whether every leaf decided per call is decided by the documents alone (none by q and k)."""
    leaves = [leaf for rule in rules for leaf in rule.leaves() if leaf.dynamic]
    return bool(leaves) and all(getattr(leaf, "decided_by", None) == "documents" for leaf in leaves)


def reused(memo: LastTensor, tensors: Tensors, key: tuple, device: torch.device, make: Callable[[], T]) -> T:
    """What `memo` holds for these very `tensors` and `key`, else `make()`, remembered when the call may
    reuse (see the module docstring)."""
    if not _may_reuse(device):
        return make()
    found = memo.get(tensors, key)
    if found is None:
        found = make()
        memo.put(tensors, found, key)
    return found


def _may_reuse(device: torch.device) -> bool:
    """Not under a tracer or torch.compile, not inside a capture, and not turned off."""
    chosen = os.environ.get(REUSE_LAYOUT, "")
    if chosen not in ("", "0", "1"):
        raise BackendError(f"{REUSE_LAYOUT} must be 0 or 1, got {chosen!r}")
    if chosen == "0":
        return False
    return not (torch.compiler.is_compiling() or tracing_mode() or capturing(device))
