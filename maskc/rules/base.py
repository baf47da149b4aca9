"""The element rule: a predicate tree over (query i, key j) with exact block-level reasoning.

Every primitive lowers to a `Rule`; the rule layer knows nothing of specs or backends.
A rule answers, for tiles of the attention matrix,
whether the tile is empty, partial or full, without evaluating its elements wherever a
closed form exists. Where children disagree in a way that no closed form settles (two
partial children of a union, say), `resolve_tiles` evaluates the elements, once per class
of identical tiles: tiles with equal signatures have identical local masks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from maskc.grid import TileGrid, group_ids
from maskc.origin import NOWHERE, Origin

#: Largest number of tile elements evaluated in one batch by `evaluate_tiles`.
_BATCH_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class TileClass:
    """Per tile: does any element hold (`any`), do all in-range elements hold (`full`)."""

    any: np.ndarray
    full: np.ndarray


class Rule(ABC):
    """A node of the element rule. Primitives lower to these; backends emit kernels from them by type."""

    #: The spec path of the primitive that produced this rule; prints as e.g. "pattern[0].window".
    origin: Origin = NOWHERE
    #: True when the rule is decided only at run time (cluster).
    dynamic: bool = False

    @abstractmethod
    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Boolean mask for query indices i and key indices j (numpy broadcasting, 0 ≤ i, j < n)."""

    @abstractmethod
    def blocks(self, grid: TileGrid) -> np.ndarray:
        """Sorted linear ids of exactly the non-empty tiles. Cost grows with their number."""

    @abstractmethod
    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        """Exact empty/partial/full class of the given tiles."""

    @abstractmethod
    def estimate(self, grid: TileGrid) -> int:
        """An upper bound on the number of non-empty tiles, to pick the cheapest generator."""

    @abstractmethod
    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        """Integer columns such that tiles with equal rows (and equal clipping) have equal masks."""

    @abstractmethod
    def describe(self) -> str:
        """A short human-readable form, e.g. `window(-256..256)`."""

    def grid_classes(self, grid: TileGrid) -> TileClass:
        """Classes of every tile as (row_tiles, col_tiles) maps, for layouts that store most tiles.

        This rule's own tiles, scattered: the cost grows with them, as in `tiles`. Rules whose
        classes separate into row and column terms override it with broadcasting.
        """
        ids = self.blocks(grid)
        full = self.classify(grid, *grid.split(ids)).full
        any_, full_map = (np.zeros((grid.row_tiles, grid.col_tiles), dtype=bool) for _ in range(2))
        any_.ravel()[ids] = True
        full_map.ravel()[ids[full]] = True
        return TileClass(any=any_, full=full_map)

    def tiles(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, full) of exactly the non-empty tiles, sorted by (row, column)."""
        r, c = grid.split(self.blocks(grid))
        return r, c, self.classify(grid, r, c).full

    def children(self) -> tuple[Rule, ...]:
        return ()

    def leaves(self) -> Iterator[Rule]:
        """The primitive rules under this node, left to right."""
        kids = self.children()
        if not kids:
            yield self
        for kid in kids:
            yield from kid.leaves()

    def static_bound(self, lower: bool = True) -> Rule:
        """A rule without dynamic leaves: a subset of this one (lower) or a superset (upper).

        The lower bound is what holds whatever run time decides, which is what a sound
        reachability proof may use.
        """
        return self

    def __repr__(self) -> str:
        return self.describe()


def uniform_tiles_alike(cls: TileClass, columns: list[np.ndarray]) -> list[np.ndarray]:
    """Signature columns in which all empty tiles share one key, and all full tiles another.

    A rule's mask is constant on its empty and full tiles, so only partial tiles need the
    detailed key; collapsing the rest keeps the number of distinct tile classes small.
    """
    state = np.where(cls.full, 1, np.where(cls.any, 2, 0))
    partial = state == 2
    return [state] + [np.where(partial, col, 0) for col in columns]


def combine_keys(columns: list[np.ndarray]) -> np.ndarray:
    """Fold several integer columns into one int64 key with the same equality classes."""
    key = np.zeros(len(columns[0]) if columns else 0, dtype=np.int64)
    for col in columns:
        col = np.asarray(col, dtype=np.int64)
        if col.size == 0:
            continue
        shifted = col - col.min()
        span = int(shifted.max()) + 1
        if int(key.max(initial=0)) + 1 > (1 << 62) // span:
            key = group_ids(key)[1]
        key = key * span + shifted
    return key


def tile_classes(rule: Rule, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group tiles by signature: returns (representative positions, inverse index)."""
    columns = rule.signature(grid, r, c)
    columns += [grid.row_last(r) - grid.row_first(r), grid.col_last(c) - grid.col_first(c)]
    first, inverse, _ = group_ids(combine_keys(columns))
    return first, inverse


def evaluate_tiles(rule: Rule, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Element masks of the given tiles, shape (len(r), BM, BN); out-of-range elements False."""
    bm, bn = grid.block_m, grid.block_n
    out = np.zeros((len(r), bm, bn), dtype=bool)
    step = max(1, _BATCH_ELEMENTS // (bm * bn))
    for lo in range(0, len(r), step):
        rows = grid.row_first(r[lo : lo + step])[:, None, None] + np.arange(bm)[None, :, None]
        cols = grid.col_first(c[lo : lo + step])[:, None, None] + np.arange(bn)[None, None, :]
        valid = (rows < grid.n) & (cols < grid.n)
        out[lo : lo + step] = rule.mask(np.minimum(rows, grid.n - 1), np.minimum(cols, grid.n - 1)) & valid
    return out


def resolve_tiles(rule: Rule, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
    """Exact class of tiles by evaluating one representative of each signature class."""
    if len(r) == 0:
        empty = np.zeros(0, dtype=bool)
        return TileClass(empty, empty)
    first, inverse = tile_classes(rule, grid, r, c)
    masks = evaluate_tiles(rule, grid, r[first], c[first])
    rows = grid.row_last(r[first]) - grid.row_first(r[first]) + 1
    cols = grid.col_last(c[first]) - grid.col_first(c[first]) + 1
    counts = masks.sum(axis=(1, 2))
    return TileClass(any=(counts > 0)[inverse], full=(counts == rows * cols)[inverse])


class EmptyRule(Rule):
    """Holds nowhere: the lower bound of a dynamic leaf."""

    def __init__(self, origin: Origin = NOWHERE) -> None:
        self.origin = origin

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return np.zeros(np.broadcast(i, j).shape, dtype=bool)

    def blocks(self, grid: TileGrid) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        none = np.zeros(len(r), dtype=bool)
        return TileClass(any=none, full=none.copy())

    def estimate(self, grid: TileGrid) -> int:
        return 0

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        return []

    def describe(self) -> str:
        return "empty"
