"""Dynamic patterns (cluster): resolved from q and k into one static pattern per batch element."""

from __future__ import annotations

import torch

from maskc.clustering import resolve_dynamic
from maskc.errors import BackendError
from maskc.ir import CompiledPattern

from .checks import CallShape, check_pattern


def static_patterns(
    pattern: CompiledPattern, q: torch.Tensor, k: torch.Tensor, shape: CallShape
) -> list[CompiledPattern]:
    """[pattern] when it is static; otherwise its resolution for each batch element, checked like the pattern."""
    if not pattern.dynamic:
        return [pattern]
    with torch.no_grad():
        resolved = list(resolve_dynamic(pattern, q.detach(), k.detach()))
    if len(resolved) != shape.batch:
        raise BackendError(
            f"resolving pattern {pattern.spec.name!r} gave {len(resolved)} patterns for a batch of {shape.batch}"
        )
    for b, each in enumerate(resolved):
        if each.dynamic:
            raise BackendError(f"resolving pattern {pattern.spec.name!r} left batch element {b} dynamic")
        check_pattern(each, shape)
    return resolved
