"""The rule tree as a union of disjuncts, and the token order each disjunct asks for.

Lowering rules, read off the tree, never written per spec:

- a conjunct band on tokens with step s (a stride, a dilation, an axial column) keeps every pair
  inside one residue class mod s, where it is contiguous: order positions by (i mod s, i // s);
- a conjunct key set (global columns, sinks, summary columns) that is small runs as a gathered
  compact key set; a conjunct query set (global rows) as gathered query rows;
- a conjunct grid window (a neighbourhood, sliding tiles) is a band on every axis of its canvas:
  it is made of dense tiles in a tiled order, tokens grouped by small boxes of the canvas
  (`maskc.schedule.tiled`), dilated axes first grouped by residue;
- anything else stays in token order.

A union's parts that ask for different orders become different passes (`maskc.schedule.plan`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

from maskc.rules import (
    BandRule,
    Canvas,
    DifferenceRule,
    GridWindowRule,
    IntersectRule,
    Rule,
    TokenSetRule,
    UnionRule,
    intersect_rules,
)

#: Largest number of disjuncts an intersection of unions is expanded into.
MAX_DISJUNCTS = 32
#: A token set is gathered when it holds at most n / GATHER_FRACTION tokens.
GATHER_FRACTION = 8


@dataclass(frozen=True)
class Order:
    """The token order a disjunct asks for."""

    kind: str  # "identity", "residue", "gathered keys", "gathered queries", "tiled"
    modulus: int = 1
    #: Residue orders: the range of t_j − t_i (i = r + s·t) within a class; None is open.
    step_lo: int | None = None
    step_hi: int | None = None
    #: Gathered orders: the sorted positions gathered.
    tokens: tuple[int, ...] = ()
    why: str = ""
    #: Tiled orders: the canvas whose cells are regrouped, and the dilation of each axis.
    canvas: Canvas | None = None
    dilation: tuple[int, ...] = ()

    @property
    def group(self) -> tuple[object, ...]:
        """Disjuncts with equal groups share a pass."""
        return (self.kind, self.modulus, self.tokens, self.canvas, self.dilation)


IDENTITY = Order("identity", why="token order")


def disjuncts(rule: Rule) -> list[Rule]:
    """Rules whose union is `rule`: unions split, intersections distributed over them, differences
    distributed over their left side. An intersection that would expand past MAX_DISJUNCTS stays whole."""
    if isinstance(rule, UnionRule):
        return [d for kid in rule.kids for d in disjuncts(kid)]
    if isinstance(rule, IntersectRule):
        parts = [disjuncts(kid) for kid in rule.kids]
        if math.prod(len(p) for p in parts) > MAX_DISJUNCTS:
            return [rule]
        return [intersect_rules(list(combo), origin=rule.origin) for combo in itertools.product(*parts)]
    if isinstance(rule, DifferenceRule):
        left, right = rule.kids
        return [DifferenceRule([d, right], origin=rule.origin) for d in disjuncts(left)]
    return [rule]


def conjuncts(rule: Rule) -> list[Rule]:
    """Rules every pair of `rule` satisfies (a superset description, for choosing orders)."""
    if isinstance(rule, IntersectRule):
        return [c for kid in rule.kids for c in conjuncts(kid)]
    if isinstance(rule, DifferenceRule):
        return conjuncts(rule.kids[0])
    return [rule]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def residue_order(parts: list[Rule], n: int) -> Order | None:
    """Residue order mod the largest step of a conjunct token band, with the class offsets it allows."""
    bands = [p for p in parts if isinstance(p, BandRule) and p.unit == 1]
    steps = [b.step for b in bands if 1 < b.step < n]
    if not steps:
        return None
    s = max(steps)
    lo: int | None = None
    hi: int | None = None
    for band in bands:
        if band.lo is not None:
            lo = _ceil_div(band.lo, s) if lo is None else max(lo, _ceil_div(band.lo, s))
        if band.hi is not None:
            hi = band.hi // s if hi is None else min(hi, band.hi // s)
    return Order("residue", modulus=s, step_lo=lo, step_hi=hi, why=f"a step of {s} is contiguous within i mod {s}")


def gathered_order(parts: list[Rule], n: int) -> Order | None:
    """Gathered keys (or queries) when a conjunct token set is small; the smaller side wins."""
    best: Order | None = None
    for axis, kind in (("columns", "gathered keys"), ("rows", "gathered queries")):
        sets = [p.tokens for p in parts if isinstance(p, TokenSetRule) and p.axis == axis]
        if not sets:
            continue
        member = np.logical_and.reduce([s.contains(np.arange(n)) for s in sets])
        tokens = np.flatnonzero(member)
        if 0 < len(tokens) <= n // GATHER_FRACTION and (best is None or len(tokens) < len(best.tokens)):
            side = "key" if axis == "columns" else "query"
            best = Order(kind, tokens=tuple(tokens.tolist()), why=f"{len(tokens)} {side} positions hold every pair")
    return best


def tiled_order(parts: list[Rule]) -> Order | None:
    """A tiled order of the canvas of the first conjunct grid window (the tile shape is chosen
    with the kernels' tile shape, `maskc.schedule.tiled`)."""
    windows = [p for p in parts if isinstance(p, GridWindowRule)]
    if not windows:
        return None
    window = windows[0]
    dilation = tuple(axis.step for axis in window.axes)
    dilated = "" if all(d == 1 for d in dilation) else ", dilated axes grouped by residue"
    return Order(
        "tiled",
        canvas=window.canvas,
        dilation=dilation,
        why=f"a {window.name} window is a band on every axis: dense tiles when tokens are grouped by boxes{dilated}",
    )


def order_of(rule: Rule, n: int) -> Order:
    """The token order a disjunct asks for: gathered sets first (smallest work), then grid tiles,
    then residues."""
    if rule.dynamic:
        return IDENTITY
    parts = conjuncts(rule)
    return gathered_order(parts, n) or tiled_order(parts) or residue_order(parts, n) or IDENTITY


def merged_residue(a: Order, b: Order) -> Order:
    """One residue order allowing both orders' class offsets (their hull; None stays open)."""
    lo = None if a.step_lo is None or b.step_lo is None else min(a.step_lo, b.step_lo)
    hi = None if a.step_hi is None or b.step_hi is None else max(a.step_hi, b.step_hi)
    return replace(a, step_lo=lo, step_hi=hi)


def merged_gather(a: Order, b: Order) -> Order:
    """One gathered order holding both orders' positions: a union of key sets gathers once."""
    tokens = tuple(sorted(set(a.tokens) | set(b.tokens)))
    side = "key" if a.kind == "gathered keys" else "query"
    return Order(a.kind, tokens=tokens, why=f"{len(tokens)} {side} positions hold every pair")
