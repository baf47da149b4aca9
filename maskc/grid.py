"""The tile grid: how a sequence of n tokens splits into query and key tiles."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """An n × n attention matrix cut into BLOCK_M × BLOCK_N tiles (the last ones clipped at n)."""

    n: int
    block_m: int
    block_n: int

    @property
    def row_tiles(self) -> int:
        return -(-self.n // self.block_m)

    @property
    def col_tiles(self) -> int:
        return -(-self.n // self.block_n)

    def row_first(self, r: np.ndarray) -> np.ndarray:
        """First query index of each tile row."""
        return np.asarray(r, dtype=np.int64) * self.block_m

    @cached_property
    def _row_last(self) -> np.ndarray:
        return np.minimum(np.arange(1, self.row_tiles + 1, dtype=np.int64) * self.block_m, self.n) - 1

    @cached_property
    def _col_last(self) -> np.ndarray:
        return np.minimum(np.arange(1, self.col_tiles + 1, dtype=np.int64) * self.block_n, self.n) - 1

    def row_last(self, r: np.ndarray) -> np.ndarray:
        """Last query index (inclusive, clipped at n − 1) of each tile row."""
        return self._row_last[r]

    def col_first(self, c: np.ndarray) -> np.ndarray:
        return np.asarray(c, dtype=np.int64) * self.block_n

    def col_last(self, c: np.ndarray) -> np.ndarray:
        return self._col_last[c]

    @lru_cache(maxsize=8)  # noqa: B019 - a handful of units per grid, grids are few and small
    def unit_bounds(self, unit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per tile: first and last unit index (position // unit) of its rows, then of its columns."""
        rows = np.arange(self.row_tiles, dtype=np.int64)
        cols = np.arange(self.col_tiles, dtype=np.int64)
        return (
            self.row_first(rows) // unit,
            self.row_last(rows) // unit,
            self.col_first(cols) // unit,
            self.col_last(cols) // unit,
        )

    def split(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linear tile ids (row * col_tiles + col) to (row, col)."""
        return np.divmod(ids, self.col_tiles)

    def join(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.asarray(r, dtype=np.int64) * self.col_tiles + c

    def all_ids(self) -> np.ndarray:
        return np.arange(self.row_tiles * self.col_tiles, dtype=np.int64)


def ragged_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each k, the integers lo[k]..hi[k] (inclusive; empty when hi < lo), flattened.

    Returns (owner, value): owner[t] is the k that value[t] belongs to. Vectorized, so the
    cost is the number of values produced, with no Python loop.
    """
    lo = np.asarray(lo, dtype=np.int64)
    counts = np.maximum(np.asarray(hi, dtype=np.int64) - lo + 1, 0)
    owner = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    value = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(starts - lo, counts)
    return owner, value


def sorted_union(arrays: list[np.ndarray]) -> np.ndarray:
    """Union of sorted duplicate-free int64 arrays, sorted (a merge: runs make the sort linear)."""
    merged = np.sort(np.concatenate(arrays), kind="stable")
    if len(merged) == 0:
        return merged
    keep = np.empty(len(merged), dtype=bool)
    keep[0] = True
    np.not_equal(merged[1:], merged[:-1], out=keep[1:])
    return merged[keep]


def group_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group equal keys: (index of each group's first member, group of each key, group sizes).

    A sort-based replacement for np.unique(return_index, return_inverse, return_counts), which
    is much slower on millions of keys.
    """
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]])) if len(keys) else np.zeros(0, int)
    group_sorted = np.cumsum(np.concatenate([[False], ordered[1:] != ordered[:-1]])) if len(keys) else order
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = group_sorted
    sizes = np.diff(np.append(starts, len(keys)))
    return order[starts], inverse, sizes
