"""Run-time layouts built once per documents tensor: a model's layers share them.

Every attention layer of a model receives the same `documents` tensor for a batch. A pattern whose
run-time parts are decided by the documents alone (document, per-document sinks and globals; no
top-k, no clusters, which q and k decide) gets the same tile tables in every layer, so building them
per call repeats about twenty small device operations per walk, host time the kernels then wait
for (bench/NOTES.md). Here an eager call reuses, per plan, the last inputs made from the very same
documents tensor at the same version (an in-place change moves the version: maskc.tensor_memo), and
with them the tables the first call built (`CallInputs.built`). Calls being traced or captured in a
CUDA graph build their own, as before: a graph must own what it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from maskc.rules import ClusterRule, Rule, TopkRule
from maskc.tensor_memo import LastTensor

from .runtime import CallInputs

#: Per plan key: the run-time tensors last made from a documents tensor, and the call inputs (with the
#: tables built from them) last made from those very tensors.
_TENSORS: dict[str, LastTensor] = {}
_INPUTS: dict[str, tuple[tuple[torch.Tensor, ...], tuple[int, ...], tuple[int, ...], CallInputs]] = {}


def reusable(rules: Sequence[Rule], documents: torch.Tensor | None) -> bool:
    """Whether a call's run-time layout follows from its documents alone, and the call runs eagerly."""
    if documents is None or torch.compiler.is_compiling() or _capturing():
        return False
    return not any(isinstance(leaf, (TopkRule, ClusterRule)) for rule in rules for leaf in rule.leaves())


def document_tensors(
    plan_key: str, documents: torch.Tensor, shape: tuple[int, ...], make: Callable[[], list[torch.Tensor]]
) -> list[torch.Tensor]:
    """`make()`, or what it gave for this documents tensor, unchanged, and call shape (batch, heads, n)."""
    memo = _TENSORS.setdefault(plan_key, LastTensor())
    found = memo.get(documents, shape)
    if found is None:
        found = make()
        memo.put(documents, found, shape)
    return found


def call_inputs_for(plan_key: str, tensors: list[torch.Tensor], shape: tuple[int, ...],
                    make: Callable[[], CallInputs]) -> CallInputs:  # fmt: skip
    """`make()`, or the inputs (and their built tables) last made from these very tensors for this
    call shape. The entry keeps its tensors alive, so an identical identity is the same tensor."""
    versions = tuple(t._version for t in tensors)
    found = _INPUTS.get(plan_key)
    if found is not None:
        seen, seen_versions, seen_shape, inputs = found
        same = len(seen) == len(tensors) and all(a is b for a, b in zip(seen, tensors))
        if same and seen_shape == shape and seen_versions == versions:
            return inputs
    inputs = make()
    if not _capturing() and not torch.compiler.is_compiling():
        _INPUTS[plan_key] = (tuple(tensors), versions, shape, inputs)
    return inputs


def forget() -> None:
    """Drop every kept layout (tests; frees the tables)."""
    _TENSORS.clear()
    _INPUTS.clear()


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
