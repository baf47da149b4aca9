"""Clusters as segments: positions sorted by cluster, the rule evaluated on original positions.

A pattern whose every pair must share a cluster (a `cluster` leaf intersected with the rest, e.g.
`causal: true` over `cluster`) attends only inside clusters. In token order those pairs are
scattered over the whole grid; sorted by cluster (a stable sort per batch element and head, so
positions keep their order inside a cluster) they are variable-length segments on the diagonal,
like packed documents. `SortedClusterRule` is that rule in sorted order: row p and column q stand
for the original positions q_order[p] and k_order[q] (tables of the call), and the original rule
— the cluster leaf comparing labels, causal and window on positions — holds there. So the mask is
exactly the token-order one, permuted.

`sorted_kinds` gives every tile of the sorted grid its kind (empty, partial, full) with torch
ops on the device: the cluster leaf from each tile's first and last sorted label (segments are
contiguous), bands from each tile's smallest and largest original position, any other leaf as
"may hold, not known full" (its tiles are stored and masked by the exact predicate).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import reduce

import torch

from maskc.grid import TileGrid
from maskc.ir import CompiledPattern
from maskc.rules import BandRule, ClusterRule, DifferenceRule, EmptyRule, IntersectRule, Rule, UnionRule
from maskc.rules.deferred import DeferredRule
from maskc.tile_kinds import EMPTY, FULL, PARTIAL, difference, intersection, kinds_of, union


def bounding_cluster(rule: Rule) -> ClusterRule | None:
    """The cluster leaf every pair of `rule` must satisfy, if there is one (None otherwise).

    A cluster leaf bounds itself; an intersection is bounded by any of its kids' bounds; a difference
    by its first kid's; a union only when all its kids share one bound.
    """
    if isinstance(rule, ClusterRule):
        return rule
    if isinstance(rule, IntersectRule):
        return next((leaf for leaf in map(bounding_cluster, rule.kids) if leaf is not None), None)
    if isinstance(rule, DifferenceRule):
        return bounding_cluster(rule.kids[0])
    if isinstance(rule, UnionRule):
        bounds = [bounding_cluster(kid) for kid in rule.kids]
        first = bounds[0]
        if first is not None and all(b is not None and b.origin == first.origin for b in bounds):
            return first
    return None


def sorting_leaf(pattern: CompiledPattern) -> ClusterRule | None:
    """The one cluster leaf that bounds every layout of the pattern, if there is one: the pattern then
    runs in cluster order. Patterns whose pairs may leave a cluster (a union with a window, heads
    without clusters, two different cluster leaves) return None and run in token order."""
    bounds = [bounding_cluster(layout.rule) for layout in pattern.layouts]
    first = bounds[0]
    if first is None or any(b is None or b.origin != first.origin for b in bounds):
        return None
    return first


class SortedClusterRule(DeferredRule):
    """`inner` on the sorted grid: row p, column q hold when `inner` holds at the call's original
    positions q_order[p], k_order[q] (the stable sorts by `leaf`'s labels, per batch and head)."""

    def __init__(self, inner: Rule, leaf: ClusterRule, n: int) -> None:
        self.inner, self.leaf, self.n = inner, leaf, n
        self.origin = inner.origin

    def children(self) -> tuple[Rule, ...]:
        return (self.inner,)

    def static_bound(self, lower: bool = True) -> Rule:
        return EmptyRule(self.origin) if lower else BandRule(1, None, None, 1, self.origin)

    def describe(self) -> str:
        return f"{self.inner.describe()} in the order of {self.leaf.describe()}"


def order_keys(leaf: ClusterRule) -> tuple[str, str]:
    """The call-input keys of the query and key orders of a cluster leaf."""
    origin = str(leaf.origin)  # str() first: torch.compile traces it, not a format of the dataclass
    return f"q_order:{origin}", f"k_order:{origin}"


def label_keys(leaf: ClusterRule) -> tuple[str, str]:
    """The call-input keys of the query and key labels of a cluster leaf (as `runtime.CallInputs`)."""
    origin = str(leaf.origin)
    return f"q_labels:{origin}", f"k_labels:{origin}"


def cluster_order(labels: torch.Tensor) -> torch.Tensor:
    """(..., N) labels → int64 positions sorted by label, stable (equal labels keep their order)."""
    return torch.sort(labels, dim=-1, stable=True).indices


def _tile_extremes(values: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., N) → per tile of `size` positions: (smallest, largest) value (the last tile clipped at N:
    padded with copies of the last value, which change neither)."""
    n = values.shape[-1]
    tiles = -(-n // size)
    if tiles * size != n:
        values = torch.cat([values, values[..., -1:].expand(*values.shape[:-1], tiles * size - n)], dim=-1)
    smallest, largest = torch.aminmax(values.reshape(*values.shape[:-1], tiles, size), dim=-1)
    return smallest, largest


class _SortedTiles:
    """Per tile of the sorted grid: the label span and the original-position span of its rows and columns.

    Labels and positions of both sides go through one stack and one reduction when rows and columns
    share a tile size: a call builds these tables every time, and each torch op costs host time."""

    def __init__(self, leaf: ClusterRule, grid: TileGrid, values: dict[str, torch.Tensor]) -> None:
        orders = torch.stack([values[key] for key in order_keys(leaf)]).long()  # (2: rows, columns; ..., N)
        labels = torch.stack([values[key] for key in label_keys(leaf)]).long().gather(-1, orders)
        self.leaf = leaf
        if grid.block_m == grid.block_n:
            lo, hi = _tile_extremes(torch.cat([labels, orders]), grid.block_m)
            spans = list(zip(lo.unbind(0), hi.unbind(0)))
        else:  # each side on its own tiles; (lo, hi) of (labels, positions) per side
            sizes = (grid.block_m, grid.block_n)
            sides = [_tile_extremes(torch.stack([labels[i], orders[i]]), size) for i, size in enumerate(sizes)]
            spans = [(lo[j], hi[j]) for j in (0, 1) for lo, hi in sides]
        self.row_labels, self.col_labels, self.row_positions, self.col_positions = spans

    def cluster(self) -> torch.Tensor:
        """Rows and columns share a cluster only where their sorted label spans overlap; a tile is full
        when both sides hold one and the same label."""
        (r0, r1), (c0, c1) = self.row_labels, self.col_labels
        r0, r1, c0, c1 = r0[..., :, None], r1[..., :, None], c0[..., None, :], c1[..., None, :]
        return kinds_of((r0 <= c1) & (c0 <= r1), (r0 == r1) & (c0 == c1) & (r0 == c0))

    def band(self, rule: BandRule) -> torch.Tensor:
        """d = k//unit − q//unit on original positions lies in [k_lo − q_hi, k_hi − q_lo] over the tile
        (floors keep the order, so the extremes of positions give those of units)."""
        unit = rule.unit
        (q_lo, q_hi), (k_lo, k_hi) = self.row_positions, self.col_positions
        if unit != 1:
            q_lo, q_hi, k_lo, k_hi = (x // unit for x in (q_lo, q_hi, k_lo, k_hi))
        d_lo = k_lo[..., None, :] - q_hi[..., :, None]
        d_hi = k_hi[..., None, :] - q_lo[..., :, None]
        anys, fulls = [], []
        if rule.lo is not None:
            anys, fulls = anys + [d_hi >= rule.lo], fulls + [d_lo >= rule.lo]
        if rule.hi is not None:
            anys, fulls = anys + [d_lo <= rule.hi], fulls + [d_hi <= rule.hi]
        if not anys:  # no condition: the band holds everywhere
            return _constant(PARTIAL if rule.step != 1 else FULL, d_lo)
        any_ = reduce(torch.logical_and, anys)
        if rule.step != 1:  # a stride: never known full
            return any_.to(torch.int8)
        return kinds_of(any_, reduce(torch.logical_and, fulls))


def _constant(kind: int, like: torch.Tensor) -> torch.Tensor:
    """One broadcastable element of `kind`, with `like`'s number of dimensions."""
    return torch.full((1,) * like.dim(), kind, dtype=torch.int8, device=like.device)


def _kinds(rule: Rule, tiles: _SortedTiles) -> torch.Tensor:
    """Stored tiles cover `rule`'s pairs, full tiles lie inside them (like `runtime.tile_kinds`); a leaf
    this module does not classify may hold anywhere and is nowhere known to be full."""
    if isinstance(rule, ClusterRule) and rule.origin == tiles.leaf.origin:
        return tiles.cluster()
    if isinstance(rule, BandRule):
        return tiles.band(rule)
    like = tiles.row_positions[0][..., None]
    if isinstance(rule, EmptyRule):
        return _constant(EMPTY, like)
    if isinstance(rule, (UnionRule, IntersectRule)):
        kids = [_kinds(kid, tiles) for kid in rule.kids]
        return union(kids) if isinstance(rule, UnionRule) else intersection(kids)
    if isinstance(rule, DifferenceRule):
        return difference(*(_kinds(kid, tiles) for kid in rule.kids))
    return _constant(PARTIAL, like)


def sorted_kinds(rule: SortedClusterRule, grid: TileGrid, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """int8 kinds of every tile of the sorted grid (`maskc.tile_kinds`), (batch, heads, row tiles,
    column tiles)."""
    tiles = _SortedTiles(rule.leaf, grid, values)
    shape = (*tiles.row_positions[0].shape, tiles.col_positions[0].shape[-1])
    return _kinds(rule.inner, tiles).expand(shape)


def sorted_rules(rules: Iterable[Rule], leaf: ClusterRule, n: int) -> list[Rule]:
    """Each rule wrapped to run in the order of `leaf`."""
    return [SortedClusterRule(rule, leaf, n) for rule in rules]
