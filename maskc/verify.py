"""`maskc.verify`: prove that every token reaches every token it must within L layers, or refute it.

Semantics: layer l applies its pattern from the spec's layer schedule (cycled), each layer's heads
count as their union, and every layer keeps what a token had (residual). Key j reaches query i
within L layers when positions j = p0, p1, …, pL = i exist with p_l attending p_(l−1) in layer l,
or p_l = p_(l−1). The spec holds for L when every pair reaches (pairs with j ≤ i when causal).
Run-time (cluster) parts contribute no edges: what is proven then holds for any clustering.

The answer is exact: see maskc.reach.intervals and maskc.reach.bitsets for the two engines and
why each computes reach sets exactly, and maskc.reach.walk for why "never" is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maskc.errors import MaskcError
from maskc.ir import CompiledPattern
from maskc.reach.report import Reach, Report, farthest_missed
from maskc.reach.search import search
from maskc.reach.stack import build_stack
from maskc.reach.walk import Progress
from maskc.reach.witness import Witness
from maskc.spec import Spec


def verify(
    spec_or_pattern: Spec | str | Path | CompiledPattern,
    layers: int,
    seq_len: int | None = None,
    *,
    block_size: int | tuple[int, int] | None = None,
    progress: Progress | None = None,
    documents: Any = None,
) -> Report:
    """Does every token reach every token it must within `layers` layers? Exact, with min_layers.

    `spec_or_pattern` is a Spec, a spec file, or a CompiledPattern (then used at every layer).
    `progress`, when given, receives short messages while a long search runs. `documents` (one id
    per position) resolve the document parts, so reach is checked inside each document.
    """
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
        raise MaskcError(f"layers must be a whole number ≥ 0, got {layers!r}")
    stack = build_stack(spec_or_pattern, seq_len=seq_len, block_size=block_size, documents=documents)
    engine, outcome = search(stack, layers, progress)
    counterexample, reach = None, None
    if outcome.shortfall is not None:
        at, j, reached = outcome.shortfall
        counterexample = (farthest_missed(stack, j, reached), j)
        reach = Reach.of(j, at, reached)
    return Report(
        spec=stack.name,
        seq_len=stack.n,
        layers=layers,
        causal=stack.causal,
        reachable=outcome.shortfall is None,
        min_layers=outcome.min_layers,
        counterexample=counterexample,
        reach=reach,
        dynamic_ignored=bool(stack.dynamic),
        dynamic=stack.dynamic,
        method=engine.method,
        _stack=stack,
        _engine=engine,
    )


__all__ = ["Reach", "Report", "Witness", "verify"]
