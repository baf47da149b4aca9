"""The random table rule: j // unit is one of table[i // unit], for a table drawn at lowering.

`draw_distinct` draws the table (`draw_among` where each row skips units it already covers); kernels
read it as a lookup, which is exact and needs no bitmask.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from maskc.grid import TileGrid, group_ids, ragged_ranges
from maskc.origin import Origin
from maskc.rules.base import Rule, TileClass, uniform_tiles_alike


def draw_distinct(rows: int, population: int, per_row: int, rng: np.random.Generator) -> np.ndarray:
    """`per_row` distinct values from range(population) for each row (Floyd's algorithm), sorted."""
    out = np.empty((rows, per_row), dtype=np.int64)
    for t, top in enumerate(range(population - per_row, population)):
        pick = rng.integers(0, top + 1, size=rows)
        taken = (out[:, :t] == pick[:, None]).any(axis=1)
        out[:, t] = np.where(taken, top, pick)
    return np.sort(out, axis=1)


def draw_among(
    per_row: int, covered_ptr: np.ndarray, covered_idx: np.ndarray, units: int, rng: np.random.Generator
) -> np.ndarray:
    """Per row, `per_row` distinct units drawn uniformly among those it does not cover, sorted.

    Row r covers the sorted units covered_idx[covered_ptr[r]:covered_ptr[r + 1]]. A row with fewer
    than `per_row` uncovered units takes all of them and fills its row of the table with covered
    units (which add nothing beside the entries that cover them). Floyd's algorithm on each row's
    own population; the draw depends only on the rng and these arguments.
    """
    rows = len(covered_ptr) - 1
    counts = np.diff(covered_ptr)
    free = units - counts
    population = np.maximum(free, per_row)
    ranks = np.empty((rows, per_row), dtype=np.int64)
    for t in range(per_row):
        top = population - per_row + t
        pick = rng.integers(0, top + 1)
        taken = (ranks[:, :t] == pick[:, None]).any(axis=1)
        ranks[:, t] = np.where(taken, top, pick)
    row = np.repeat(np.arange(rows), per_row)
    rank = ranks.reshape(-1)
    # The k-th uncovered unit of a row is k + #{m : c_m − m ≤ k} over its sorted covered c_0 < c_1 < ….
    shifted = np.repeat(np.arange(rows, dtype=np.int64), counts) * (units + 1) + (
        covered_idx - (np.arange(len(covered_idx)) - np.repeat(covered_ptr[:-1], counts))
    )
    before = np.searchsorted(shifted, row * (units + 1) + rank, side="right") - covered_ptr[row]
    at = np.clip(covered_ptr[row] + rank - free[row], 0, len(covered_idx) - 1)
    filler = covered_idx[at] if len(covered_idx) else at  # unused where every rank is free
    out = np.where(rank < free[row], rank + before, filler)
    return np.sort(out.reshape(rows, per_row), axis=1)


class RandomRule(Rule):
    """Holds when j // unit is one of table[i // unit]."""

    def __init__(self, table: np.ndarray, unit: int, n: int, origin: Origin) -> None:
        self.table, self.unit, self.n, self.origin = table, unit, n, origin
        self._tiles = lru_cache(maxsize=4)(self._tile_counts)

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        i, j = np.broadcast_arrays(np.asarray(i), np.asarray(j))
        return (self.table[i // self.unit] == (j // self.unit)[..., None]).any(axis=-1)

    def _unit_tiles(self, units: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        first = units * self.unit
        last = np.minimum(first + self.unit, self.n) - 1
        return first // size, last // size

    def _tile_counts(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
        """Sorted ids of the tiles the drawn pairs touch, and how many pairs touch each."""
        per_row = self.table.shape[1]
        u = np.repeat(np.arange(len(self.table)), per_row)
        v = self.table.reshape(-1)
        pair, row_tile = ragged_ranges(*self._unit_tiles(u, grid.block_m))
        col_lo, col_hi = self._unit_tiles(v[pair], grid.block_n)
        owner, col_tile = ragged_ranges(col_lo, col_hi)
        ids = grid.join(row_tile[owner], col_tile)
        first, _, sizes = group_ids(ids)
        return ids[first], sizes

    def _units_meeting(self, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        return last // self.unit - first // self.unit + 1

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        ids, counts = self._tiles(grid)
        want = grid.join(r, c)
        pos = np.minimum(np.searchsorted(ids, want), max(len(ids) - 1, 0))
        hit = ids[pos] == want if len(ids) else np.zeros(len(want), dtype=bool)
        need = self._units_meeting(grid.row_first(r), grid.row_last(r)) * self._units_meeting(
            grid.col_first(c), grid.col_last(c)
        )
        return TileClass(any=hit, full=hit & (counts[pos] == need) if len(ids) else hit)

    def blocks(self, grid: TileGrid) -> np.ndarray:
        return self._tiles(grid)[0]

    def estimate(self, grid: TileGrid) -> int:
        return len(self._tiles(grid)[0])

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        return uniform_tiles_alike(self.classify(grid, r, c), [grid.join(r, c)])

    def describe(self) -> str:
        what = "keys per query" if self.unit == 1 else f"key blocks per query block of {self.unit}"
        return f"random {self.table.shape[1]} {what}"
