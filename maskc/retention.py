"""Which keys decoding must keep: derived from the element rule, not from a cache policy.

At decode step t (the query at position t, its key just appended), a key j ≤ t must stay in the
KV cache exactly when some query i ≥ t attends it. For the rules maskc knows this set in closed
form, as a union of parts:

- a band j//u − i//u ∈ [lo, hi] (step s) keeps the keys with j//u ≥ t//u + f, f the smallest
  multiple of s that is ≥ lo: a causal window of `before` w keeps the w + 1 most recent keys; a
  band with no lower bound (dense, a stride, causal alone) keeps every key, since future queries
  meet every offset and every residue class;
- global columns (sinks, tokens) keep their members ("pinned"); columns every l grow with n;
- global rows keep every key while a member query is still to come (t ≤ its last member);
- a grid window (neighbourhood, sliding tiles) keeps key j while t ≤ last(j), the last query
  position whose window holds j: per axis the queries holding key coordinate k form an interval of
  its residue class, a storage position grows with every coordinate (row-major or tile by tile),
  so last(j) is the position of the per-axis last queries. A neighbourhood causal in time with
  kernel kt keeps the current frame and the kt − 2 before it whole, and of frame f − kt + 1 the
  cells the rest of frame f still reaches;
- a union keeps the union of its parts; an intersection with a band that holds for every j ≤ t ≤ i
  (causal masking) keeps what the other side keeps.

Anything else (a random table, a difference, other intersections) is not derived: `derived` is
False and the cache keeps every key, which is always correct. Cluster parts are decided at run
time, so any key may be needed: every key is kept. Near the end of the compiled length (fewer
than a window's worth of queries left) the set is a superset of what is strictly needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from maskc.ir import CompiledPattern
from maskc.rules import BandRule, EmptyRule, GridWindowRule, IntersectRule, Rule, TokenSetRule, UnionRule

if TYPE_CHECKING:
    from maskc.spec import Spec


class LastQuery:
    """Per key position, the last query position that attends it (−1: none), for grid windows."""

    def __init__(self, last: np.ndarray) -> None:
        self.last = np.asarray(last, dtype=np.int64)
        self.last.flags.writeable = False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LastQuery) and np.array_equal(self.last, other.last)

    def __hash__(self) -> int:
        return hash(self.last.tobytes())

    def union(self, other: LastQuery | None) -> LastQuery:
        if other is None:
            return self
        size = max(len(self.last), len(other.last))
        out = np.full(size, -1, dtype=np.int64)
        for part in (self.last, other.last):
            out[: len(part)] = np.maximum(out[: len(part)], part)
        return LastQuery(out)

    def keeps(self, t: int, positions: np.ndarray) -> np.ndarray:
        inside = positions < len(self.last)
        return inside & (self.last[np.minimum(positions, len(self.last) - 1)] >= t)


@dataclass(frozen=True)
class Retention:
    """The keys j ≤ t that some query i ≥ t attends, as a union of parts (see the module docstring)."""

    #: Every key stays: the cache grows with n.
    everything: bool = False
    #: (unit, first): the keys j with j // unit ≥ t // unit + first (recent positions).
    bands: tuple[tuple[int, int], ...] = ()
    #: Positions kept at every t (sinks, global columns).
    pinned: frozenset[int] = frozenset()
    #: (every, offset): global columns j ≡ offset (mod every), which grow with n.
    strided: tuple[tuple[int, int], ...] = ()
    #: Every key stays while t ≤ rows_until (a global query row still to come); −1: never.
    rows_until: int = -1
    #: False when maskc could not derive the set from the rule (then every key is kept).
    derived: bool = True
    #: Why every key is kept, when it is (for explanations).
    reason: str = field(default="", compare=False)
    #: The layer's mixer: only "attention" layers keep keys (recurrent and identity layers keep none).
    mixer: str = "attention"
    #: Grid windows: key j stays while t ≤ its last query position.
    grid: LastQuery | None = None

    def union(self, other: Retention) -> Retention:
        grid = self.grid.union(other.grid) if self.grid is not None else other.grid
        return Retention(
            grid=grid,
            everything=self.everything or other.everything,
            bands=tuple(sorted(set(self.bands) | set(other.bands))),
            pinned=self.pinned | other.pinned,
            strided=tuple(sorted(set(self.strided) | set(other.strided))),
            rows_until=max(self.rows_until, other.rows_until),
            derived=self.derived and other.derived,
            reason="; ".join(r for r in (self.reason, other.reason) if r),
        )

    @property
    def keeps_everything(self) -> bool:
        return self.everything or not self.derived

    def recent(self) -> int:
        """The most recent positions a step keeps at most (the rolling part of the cache)."""
        return max((unit * (1 - first) for unit, first in self.bands if first <= 0), default=0)

    def tokens(self) -> int | None:
        """Keys per step at most once t is past every pinned position; None when it grows with n."""
        if self.mixer != "attention":
            return 0
        if self.keeps_everything or self.strided:
            return None
        if self.grid is not None:
            return self._grid_peak()
        return self.recent() + len(self.pinned)

    def _grid_peak(self) -> int:
        """The most keys any step keeps, over the grid's positions: each key j is kept from step j
        to its last step (its last query for grid parts, band ends, forever when pinned)."""
        assert self.grid is not None
        n = len(self.grid.last)
        j = np.arange(n, dtype=np.int64)
        last = self.grid.last.copy()
        for unit, first in self.bands:
            if first <= 0:
                last = np.maximum(last, unit * (j // unit - first + 1) - 1)
        pinned = np.fromiter((p for p in self.pinned if p < n), dtype=np.int64)
        last[pinned] = n - 1
        end = np.minimum(last, n - 1)
        live = end >= j
        counts = np.zeros(n + 1, dtype=np.int64)
        np.add.at(counts, j[live], 1)
        np.add.at(counts, end[live] + 1, -1)
        peak = int(np.cumsum(counts)[:n].max(initial=0))
        return max(peak, min(self.rows_until + 1, n))

    def keys(self, t: int) -> np.ndarray:
        """Sorted positions j ≤ t kept at step t."""
        if self.keeps_everything or t <= self.rows_until:
            return np.arange(t + 1)
        start = min((max(0, unit * (t // unit + first)) for unit, first in self.bands if first <= 0), default=t + 1)
        parts = [np.arange(start, t + 1), np.fromiter((p for p in self.pinned if p <= t), dtype=np.int64)]
        positions = np.arange(t + 1)
        if self.grid is not None:
            parts.append(positions[self.grid.keeps(t, positions)])
        for every, offset in self.strided:
            parts.append(positions[positions % every == offset])
        return np.unique(np.concatenate(parts)).astype(np.int64)

    def keeps(self, t: int, positions: np.ndarray) -> np.ndarray:
        """Which of the given positions (all ≤ t) step t keeps: the same set as `keys`, elementwise."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.keeps_everything or t <= self.rows_until:
            return np.ones(positions.shape, dtype=bool)
        out = np.isin(positions, np.fromiter(self.pinned, dtype=np.int64, count=len(self.pinned)))
        if self.grid is not None:
            out |= self.grid.keeps(t, positions)
        for unit, first in self.bands:
            if first <= 0:
                out |= positions // unit >= t // unit + first
        for every, offset in self.strided:
            out |= positions % every == offset
        return out

    def describe(self, per: str = "") -> str:
        """E.g. "4 sinks + 1020 recent = 1024 tokens per layer, constant in n" (per=" per layer")."""
        if self.mixer != "attention":
            return f"none ({self.mixer} layers attend no keys)"
        if self.keeps_everything:
            return f"all tokens{per} (grows with n)" + (f": {self.reason}" if self.reason else "")
        parts = []
        if self.pinned:
            prefix = self.pinned == frozenset(range(len(self.pinned)))
            name = ("sink" if prefix else "pinned") + ("s" if prefix and len(self.pinned) > 1 else "")
            parts.append(f"{len(self.pinned)} {name}")
        if self.recent():
            parts.append(f"{self.recent()} recent")
        if self.grid is not None:
            rows = f"; all tokens up to step {self.rows_until} (a global query row)" if self.rows_until >= 0 else ""
            kept = " + ".join([*parts, "the keys a later query's grid window still reaches"])
            return f"{self.tokens()} tokens{per} at most: {kept}{rows}"
        if self.strided:
            return " + ".join([*parts, _periods(self.strided)]) + f"{per} (grows with n)"
        total = f" = {self.tokens()}" if len(parts) > 1 else ""
        rows = f"; all tokens up to step {self.rows_until} (a global query row)" if self.rows_until >= 0 else ""
        return f"{' + '.join(parts) or '0'}{total} tokens{per}, constant in n{rows}"


EVERYTHING = Retention(everything=True)


def _periods(strided: tuple[tuple[int, int], ...]) -> str:
    """Periodic global columns by period: "global columns every 128", "8 global columns every 128"."""
    offsets: dict[int, int] = {}
    for every, _ in strided:
        offsets[every] = offsets.get(every, 0) + 1
    return ", ".join(
        f"global columns every {every}" if count == 1 else f"{count} global columns every {every}"
        for every, count in offsets.items()
    )


def rule_retention(rule: Rule) -> Retention:
    """The retention of one element rule (exact for the rules the module docstring lists)."""
    if rule.dynamic:
        return Retention(everything=True, reason=f"{rule.describe()} is decided at run time")
    if isinstance(rule, EmptyRule):
        return Retention()
    if isinstance(rule, BandRule):
        return _band(rule)
    if isinstance(rule, TokenSetRule):
        return _tokens(rule)
    if isinstance(rule, GridWindowRule):
        return Retention(grid=LastQuery(grid_last_query(rule)))
    if isinstance(rule, UnionRule):
        out = Retention()
        for kid in rule.kids:
            out = out.union(rule_retention(kid))
        return out
    if isinstance(rule, IntersectRule):
        rest = [kid for kid in rule.kids if not _holds_for_past_keys(kid)]
        if len(rest) == 1:
            return rule_retention(rest[0])
        if not rest:
            return replace(EVERYTHING, reason="causal attention keeps every past key")
    return Retention(derived=False, reason=f"{rule.describe()}: keys kept are not derived for this rule")


def _band(rule: BandRule) -> Retention:
    if rule.lo is None:
        return Retention(everything=True, reason=f"{rule.describe()} reaches every past key")
    first = -(-rule.lo // rule.step) * rule.step
    if rule.hi is not None and first > rule.hi:
        return Retention()
    return Retention(bands=((rule.unit, first),))


def _tokens(rule: TokenSetRule) -> Retention:
    tokens = rule.tokens
    if rule.axis == "rows":
        if tokens.every is not None:
            return Retention(everything=True, reason=f"{rule.describe()}: a global query row is always to come")
        last = tokens.first - 1 if tokens.first is not None else int(tokens.positions.max(initial=-1))
        return Retention(rows_until=last)
    if tokens.every is not None:
        return Retention(strided=((tokens.every, tokens.offset),))
    members = range(tokens.first) if tokens.first is not None else tokens.positions.tolist()
    return Retention(pinned=frozenset(int(p) for p in members))


def grid_last_query(rule: GridWindowRule) -> np.ndarray:
    """Per position, the last query position whose window holds it (−1: none; text keys: none).

    Along each axis the last query coordinate holding key coordinate k is found on the axis's
    size × size table; a storage position grows with every coordinate, so the last query holding a
    cell is the one at the per-axis last coordinates."""
    canvas = rule.canvas
    per_axis = []
    for axis in rule.axes:
        q = np.arange(axis.size, dtype=np.int64)
        holds = axis.holds(q[:, None], q[None, :])
        per_axis.append(np.where(holds.any(axis=0), axis.size - 1 - np.argmax(holds[::-1], axis=0), -1))
    coords = canvas.coords(np.arange(canvas.cells, dtype=np.int64))
    last_coords = [table[c] for table, c in zip(per_axis, coords)]
    reached = np.logical_and.reduce([c >= 0 for c in last_coords])
    last = np.where(reached, canvas.positions([np.maximum(c, 0) for c in last_coords]), -1)
    return np.concatenate([last, np.full(canvas.text, -1, dtype=np.int64)])


def _holds_for_past_keys(rule: Rule) -> bool:
    """True when the rule holds for every key j ≤ t and query i ≥ t (the causal band and wider)."""
    return isinstance(rule, BandRule) and rule.unit == 1 and rule.step == 1 and rule.lo is None and (rule.hi or 0) >= 0


def pattern_retention(pattern: CompiledPattern) -> Retention:
    """What a cache shared by all heads of the pattern keeps: the union over its head patterns."""
    out = Retention()
    for layout in pattern.layouts:
        out = out.union(rule_retention(layout.rule))
    return out


def kv_retention(spec_or_path: Spec | str | Path, seq_len: int | None = None) -> list[Retention]:
    """One `Retention` per layer of one cycle of the spec's schedule (one entry without a schedule)."""
    from maskc.compiler import as_spec, compile_layers

    spec = as_spec(spec_or_path)
    out = []
    for (count, pattern), mixer in zip(compile_layers(spec, seq_len=seq_len), spec.layer_mixers()):
        retention = pattern_retention(pattern) if mixer == "attention" else Retention(mixer=mixer)
        out.extend([retention] * count)
    return out


def kv_cache_tokens(spec_or_path: Spec | str | Path, seq_len: int | None = None) -> list[int | None]:
    """Keys a decoding cache holds per layer of one cycle: an integer, or None where it grows with n."""
    return [retention.tokens() for retention in kv_retention(spec_or_path, seq_len)]
