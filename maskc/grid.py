"""The tile grid: how a sequence of n tokens splits into query and key tiles."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

#: Rows of the source copied per step by `transposed` (measured best for bool and int32 maps).
_TRANSPOSE_BAND = 16


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
        """Per tile: first and last unit index (position // unit) of its rows, then of its columns.

        int32 (n < 2**31): per-tile arithmetic on millions of tiles moves half the bytes of int64.
        """
        rows = np.arange(self.row_tiles, dtype=np.int64)
        cols = np.arange(self.col_tiles, dtype=np.int64)
        r0, r1, c0, c1 = (
            (bound // unit).astype(np.int32)
            for bound in (self.row_first(rows), self.row_last(rows), self.col_first(cols), self.col_last(cols))
        )
        return r0, r1, c0, c1

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Row tiles as a column and column tiles as a row: broadcast together, they are every tile."""
        return np.arange(self.row_tiles)[:, None], np.arange(self.col_tiles)[None, :]

    def split(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linear tile ids (row * col_tiles + col) to (row, col)."""
        return np.divmod(ids, self.col_tiles)

    def join(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.asarray(r, dtype=np.int64) * self.col_tiles + c


def transposed(m: np.ndarray) -> np.ndarray:
    """A contiguous copy of the 2-D m.T, in bands of rows: numpy's own copy is up to 5x slower on
    maps of millions of tiles with power-of-two sides, whose columns collide in the cache."""
    out = np.empty(m.shape[::-1], dtype=m.dtype)
    for lo in range(0, m.shape[0], _TRANSPOSE_BAND):
        out[:, lo : lo + _TRANSPOSE_BAND] = m[lo : lo + _TRANSPOSE_BAND].T
    return out


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
