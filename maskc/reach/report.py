"""The answer to "does every token reach every token it must within L layers?", with its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskc.reach.search import Engine
from maskc.reach.sets import runs
from maskc.reach.stack import LayerStack
from maskc.reach.witness import Witness, witness_path

#: Intervals of a reach set kept in a report (the count and extent are always exact).
SHOWN_RUNS = 16


@dataclass(frozen=True)
class Reach:
    """Where key `source`'s information got after `layers` layers."""

    source: int
    layers: int
    count: int
    runs: tuple[tuple[int, int], ...]
    run_count: int

    @classmethod
    def of(cls, source: int, layers: int, reached: np.ndarray) -> Reach:
        starts, ends = runs(reached)
        shown = tuple((int(a), int(b)) for a, b in zip(starts[:SHOWN_RUNS], ends[:SHOWN_RUNS]))
        return cls(source, layers, int(reached.sum()), shown, len(starts))

    def describe(self) -> str:
        spans = ", ".join(f"{a}" if a == b else f"{a} … {b}" for a, b in self.runs)
        more = f", … ({self.run_count} intervals)" if self.run_count > len(self.runs) else ""
        return f"{self.count} position{'s' if self.count != 1 else ''}: {spans}{more}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layers": self.layers,
            "count": self.count,
            "runs": [list(r) for r in self.runs],
            "run_count": self.run_count,
        }


def farthest_missed(stack: LayerStack, j: int, reached: np.ndarray) -> int:
    """The target of source j that its information misses, farthest from j."""
    lo, hi = stack.targets(j)
    missed = lo + np.flatnonzero(~reached[lo : hi + 1])
    return int(missed[np.argmax(np.abs(missed - j))])


@dataclass(frozen=True)
class Report:
    """Verdict for `layers` layers at n = `seq_len`, and the smallest layer count that works."""

    spec: str
    seq_len: int
    layers: int
    causal: bool
    reachable: bool
    #: The smallest L' for which every pair reaches; None when reach stops growing first (never).
    min_layers: int | None
    #: (query i, key j) with j's information not at i after `layers` layers; None when reachable.
    counterexample: tuple[int, int] | None
    #: Where the counterexample's key j does get within `layers` layers.
    reach: Reach | None
    dynamic_ignored: bool
    #: Origins of the run-time (cluster) parts whose edges the proof leaves out.
    dynamic: tuple[str, ...]
    method: str
    _stack: LayerStack = field(repr=False, compare=False)
    _engine: Engine = field(repr=False, compare=False)

    def path(self, i: int, j: int, unbounded: bool = False) -> Witness | None:
        """A shortest witness path from key j to query i within this report's layers (any number when
        `unbounded`, up to where reach stops growing); None when there is none."""
        return witness_path(self._stack, self._engine.image, i, j, None if unbounded else self.layers)

    def as_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "seq_len": self.seq_len,
            "layers": self.layers,
            "causal": self.causal,
            "reachable": self.reachable,
            "min_layers": self.min_layers,
            "counterexample": list(self.counterexample) if self.counterexample else None,
            "reach": self.reach.as_dict() if self.reach else None,
            "dynamic_ignored": self.dynamic_ignored,
            "dynamic": list(self.dynamic),
            "method": self.method,
        }

    def lines(self) -> list[str]:
        """The human-readable report `maskc verify` prints."""
        scope = "every key j ≤ query i (causal)" if self.causal else "every pair"
        if self._stack.document_bounds is not None:
            scope += " of one document"
        layers = f"{self.layers} layer{'s' if self.layers != 1 else ''}"
        verdict = f"PROVEN: {scope} reaches" if self.reachable else f"REFUTED: not {scope} reaches"
        out = [
            f"spec           {self.spec}  (n = {self.seq_len}, L = {self.layers})",
            f"verdict        {verdict} within {layers}",
            f"min_layers     {'never' if self.min_layers is None else self.min_layers}",
        ]
        if self.counterexample is not None and self.reach is not None:
            i, j = self.counterexample
            out.append(f"counterexample key {j} does not reach query {i} within {layers}")
            out.append(f"               key {j}'s information reaches {self.reach.describe()}")
        if self.dynamic_ignored:
            out.append(
                f"dynamic        run-time parts ignored ({', '.join(self.dynamic)}): the proof uses only edges that "
                "exist whatever they decide" + ("" if self.reachable else "; at run time they may add paths")
            )
        out.append(f"method         {self.method}")
        return out
