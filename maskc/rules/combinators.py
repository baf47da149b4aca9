"""Union, intersection and difference of rules.

Block classes combine exactly where a closed form exists (a full child makes a union tile
full; an empty child makes an intersection tile empty). The one undecidable case, two or
more partial children meeting in a tile, is settled by `resolve_tiles`.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import numpy as np

from maskc.grid import TileGrid, sorted_union
from maskc.origin import NOWHERE, Origin
from maskc.rules.band import BandRule
from maskc.rules.base import Rule, TileClass, resolve_tiles


class CombinatorRule(Rule):
    """Shared plumbing of the three combinator rules."""

    symbol = "?"

    def __init__(self, kids: list[Rule], origin: Origin = NOWHERE) -> None:
        self.kids = tuple(kids)
        self.origin = origin
        self.dynamic = any(kid.dynamic for kid in kids)

    def children(self) -> tuple[Rule, ...]:
        return self.kids

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        return [col for kid in self.kids for col in kid.signature(grid, r, c)]

    def describe(self) -> str:
        return "(" + f" {self.symbol} ".join(kid.describe() for kid in self.kids) + ")"

    def with_kids(self, kids: list[Rule]) -> Rule:
        """The same combinator over other children, keeping its origin."""
        return type(self)(kids, origin=self.origin)

    def static_bound(self, lower: bool = True) -> Rule:
        return type(self)([kid.static_bound(lower) for kid in self.kids], origin=self.origin)

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        return self._combine(grid, r, c, [kid.classify(grid, r, c) for kid in self.kids])

    def grid_classes(self, grid: TileGrid) -> TileClass:
        """The kids' whole-grid maps, combined as `classify` combines their classes."""
        return self._combine(grid, *grid.axes(), [kid.grid_classes(grid) for kid in self.kids])

    @abstractmethod
    def _combine(self, grid: TileGrid, r: np.ndarray, c: np.ndarray, classes: list[TileClass]) -> TileClass:
        """This node's classes from its kids' classes of the same tiles (r and c broadcast to them)."""


def _fold(op: np.ufunc, arrays: list[np.ndarray]) -> np.ndarray:
    """op over the arrays into a fresh one (no stacked copy of them all)."""
    out = arrays[0].copy()
    for array in arrays[1:]:
        op(out, array, out=out)
    return out


def _twice(flags: list[np.ndarray]) -> np.ndarray:
    """Where at least two of the boolean arrays hold (no integer count per tile)."""
    once, twice = flags[0].copy(), np.zeros_like(flags[0])
    for flag in flags[1:]:
        twice |= once & flag
        once |= flag
    return twice


def _partial(classes: list[TileClass]) -> list[np.ndarray]:
    return [k.any & ~k.full for k in classes]


def _settle(
    rule: Rule, grid: TileGrid, r: np.ndarray, c: np.ndarray, cls: TileClass, undecided: np.ndarray
) -> TileClass:
    """Replace the classes of undecided tiles by element-exact ones (r and c broadcast to the tiles)."""
    if undecided.any():
        rows, cols = (np.broadcast_to(x, undecided.shape)[undecided] for x in (r, c))
        exact = resolve_tiles(rule, grid, rows, cols)
        cls.any[undecided] = exact.any
        cls.full[undecided] = exact.full
    return cls


def _filtered(rule: Rule, grid: TileGrid, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-empty tiles among candidate ids, with their full flags."""
    r, c = grid.split(candidates)
    cls = rule.classify(grid, r, c)
    return r[cls.any], c[cls.any], cls.full[cls.any]


def intersect_rules(kids: list[Rule], origin: Origin) -> Rule:
    """The intersection, with bands on the same unit folded into one band (exact, and cheaper).

    j//u − i//u ∈ [lo1, hi1] ∩ [lo2, hi2] with d ≡ 0 mod s1 and mod s2 is one band:
    [max lo, min hi], step lcm(s1, s2). Causal masking of a token window is the common case.
    """
    folded: list[Rule] = []
    for kid in kids:
        twin = next(
            (f for f in folded if isinstance(f, BandRule) and isinstance(kid, BandRule) and f.unit == kid.unit), None
        )
        if twin is None:
            folded.append(kid)
            continue
        folded[folded.index(twin)] = BandRule(
            unit=twin.unit,
            lo=_bound(max, twin.lo, kid.lo),
            hi=_bound(min, twin.hi, kid.hi),
            step=math.lcm(twin.step, kid.step),
            origin=twin.origin,
        )
    return folded[0] if len(folded) == 1 else IntersectRule(folded, origin=origin)


def _bound(pick: Any, a: int | None, b: int | None) -> int | None:
    """max/min of two bounds where None means unbounded."""
    if a is None or b is None:
        return b if a is None else a
    return pick(a, b)


class UnionRule(CombinatorRule):
    symbol = "|"

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = self.kids[0].mask(i, j)
        for kid in self.kids[1:]:
            out = out | kid.mask(i, j)
        return out

    def blocks(self, grid: TileGrid) -> np.ndarray:
        if len(self.kids) == 1:
            return self.kids[0].blocks(grid)
        return sorted_union([kid.blocks(grid) for kid in self.kids])

    def _combine(self, grid: TileGrid, r: np.ndarray, c: np.ndarray, classes: list[TileClass]) -> TileClass:
        any_ = _fold(np.logical_or, [k.any for k in classes])
        full = _fold(np.logical_or, [k.full for k in classes])
        return _settle(self, grid, r, c, TileClass(any_, full), ~full & _twice(_partial(classes)))

    def estimate(self, grid: TileGrid) -> int:
        return sum(kid.estimate(grid) for kid in self.kids)


class IntersectRule(CombinatorRule):
    symbol = "&"

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = self.kids[0].mask(i, j)
        for kid in self.kids[1:]:
            out = out & kid.mask(i, j)
        return out

    def tiles(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tiles of the child with the fewest, classified against the others."""
        generator = min(self.kids, key=lambda kid: kid.estimate(grid))
        r, c, full = generator.tiles(grid)
        classes = [TileClass(np.ones(len(r), dtype=bool), full)]
        classes += [kid.classify(grid, r, c) for kid in self.kids if kid is not generator]
        cls = self._combine(grid, r, c, classes)
        return r[cls.any], c[cls.any], cls.full[cls.any]

    def blocks(self, grid: TileGrid) -> np.ndarray:
        return grid.join(*self.tiles(grid)[:2])

    def _combine(self, grid: TileGrid, r: np.ndarray, c: np.ndarray, classes: list[TileClass]) -> TileClass:
        any_ = _fold(np.logical_and, [k.any for k in classes])
        full = _fold(np.logical_and, [k.full for k in classes])
        return _settle(self, grid, r, c, TileClass(any_, full), any_ & _twice(_partial(classes)))

    def estimate(self, grid: TileGrid) -> int:
        return min(kid.estimate(grid) for kid in self.kids)


class DifferenceRule(CombinatorRule):
    symbol = "-"

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.kids[0].mask(i, j) & ~self.kids[1].mask(i, j)

    def tiles(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _filtered(self, grid, self.kids[0].blocks(grid))

    def blocks(self, grid: TileGrid) -> np.ndarray:
        return grid.join(*self.tiles(grid)[:2])

    def _combine(self, grid: TileGrid, r: np.ndarray, c: np.ndarray, classes: list[TileClass]) -> TileClass:
        a, b = classes
        cls = TileClass(any=a.any & ~b.full, full=a.full & ~b.any)
        return _settle(self, grid, r, c, cls, a.any & ~a.full & b.any & ~b.full)

    def estimate(self, grid: TileGrid) -> int:
        return self.kids[0].estimate(grid)

    def static_bound(self, lower: bool = True) -> Rule:
        a, b = self.kids
        return DifferenceRule([a.static_bound(lower), b.static_bound(not lower)], origin=self.origin)
