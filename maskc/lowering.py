"""Lowering a spec's pattern to its element rule: the primitive's `lower()` plus the causal mask.

The compiler lays these rules out; loading a saved IR rebuilds them the same way, without the
compiler.
"""

from __future__ import annotations

import numpy as np

from maskc.origin import Origin, named
from maskc.primitives import LowerContext, PatternNode
from maskc.rules import BandRule, Rule, intersect_rules
from maskc.spec import Spec

#: The origin of a spec's single pattern.
PATTERN = Origin(("pattern",))


def causal_rule() -> Rule:
    """j ≤ i: a band of offsets −∞ … 0."""
    return BandRule(unit=1, lo=None, hi=0, step=1, origin=named("causal"))


def lower_pattern(
    spec: Spec, node: PatternNode, n: int, path: Origin = PATTERN, documents: np.ndarray | None = None
) -> Rule:
    """The element rule of one pattern of `spec` at sequence length n, causal mask included; with
    `documents` (one id per position), document leaves are resolved to them."""
    canvas = spec.grid.canvas() if spec.grid is not None else None
    ctx = LowerContext(n=n, block_size=spec.block_size, canvas=canvas, causal=spec.causal, documents=documents)
    rule = node.lower(ctx, node.node_path(path))
    return intersect_rules([rule, causal_rule()], origin=path) if spec.causal else rule


def pattern_path(spec: Spec, node: PatternNode) -> Origin:
    """Where `node` stands in the spec: "pattern" or "head_patterns[k].pattern"."""
    for k, entry in enumerate(spec.head_patterns):
        if entry.pattern is node:
            return Origin(("head_patterns", k, "pattern"))
    return PATTERN
