"""Token sets and the rule that holds when the query (rows) or the key (columns) is in one.

A set is a token list, the first k tokens, or every l-th token from an offset; each has a
closed-form count over a range, which gives exact tile classes without touching elements.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np

from maskc.grid import TileGrid
from maskc.origin import Origin
from maskc.rules.base import Rule, TileClass


class TokenSet:
    """A set of positions below n with vectorized membership and range counts."""

    def __init__(
        self,
        n: int,
        *,
        tokens: list[int] | None = None,
        first: int | None = None,
        every: int | None = None,
        offset: int = 0,
    ) -> None:
        self.n, self.first, self.every, self.offset = n, first, every, offset
        self.member: np.ndarray | None = None
        self.prefix: np.ndarray | None = None
        if tokens is not None:
            self.member = np.zeros(n, dtype=bool)
            self.member[np.asarray(tokens, dtype=np.int64)] = True
            self.prefix = np.concatenate([[0], np.cumsum(self.member, dtype=np.int64)])

    def contains(self, idx: np.ndarray) -> np.ndarray:
        if self.member is not None:
            return self.member[idx]
        if self.first is not None:
            return idx < self.first
        return idx % self.every == self.offset

    def count(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Members in lo..hi inclusive (0 ≤ lo ≤ hi < n)."""
        if self.prefix is not None:
            return self.prefix[hi + 1] - self.prefix[lo]
        if self.first is not None:
            return np.maximum(np.minimum(hi, self.first - 1) - lo + 1, 0)
        return (hi - self.offset) // self.every - (lo - 1 - self.offset) // self.every

    def tile_keys(self, size: int) -> np.ndarray:
        """Per tile of `size` positions, a key; equal keys mean equal membership patterns."""
        tiles = np.arange(-(-self.n // size), dtype=np.int64)
        if self.every is not None:
            return tiles * size % self.every
        if self.member is None:
            return tiles
        padded = np.zeros(len(tiles) * size, dtype=bool)
        padded[: self.n] = self.member
        bits = np.packbits(padded.reshape(len(tiles), size), axis=1)
        return np.unique(bits, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)

    def describe(self) -> str:
        if self.member is not None:
            shown = np.flatnonzero(self.member)[:6].tolist()
            more = "…" if self.member.sum() > 6 else ""
            return "{" + ",".join(map(str, shown)) + more + "}"
        if self.first is not None:
            return f"first {self.first}"
        return f"every {self.every} from {self.offset}"


class TokenSetRule(Rule):
    """Holds when the query (axis "rows") or the key (axis "columns") is in the set."""

    def __init__(self, tokens: TokenSet, axis: Literal["rows", "columns"], origin: Origin) -> None:
        self.tokens, self.axis, self.origin = tokens, axis, origin
        self._tile_keys = lru_cache(maxsize=4)(tokens.tile_keys)

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        i, j = np.broadcast_arrays(np.asarray(i), np.asarray(j))
        return self.tokens.contains(i if self.axis == "rows" else j)

    def _ranges(self, grid: TileGrid, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.axis == "rows":
            return grid.row_first(tiles), grid.row_last(tiles)
        return grid.col_first(tiles), grid.col_last(tiles)

    def _counts(self, grid: TileGrid, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._ranges(grid, tiles)
        return self.tokens.count(lo, hi), hi - lo + 1

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        count, size = self._counts(grid, r if self.axis == "rows" else c)
        return TileClass(any=count > 0, full=count == size)

    def _member_tiles(self, grid: TileGrid) -> np.ndarray:
        tiles = np.arange(grid.row_tiles if self.axis == "rows" else grid.col_tiles)
        return tiles[self._counts(grid, tiles)[0] > 0]

    def blocks(self, grid: TileGrid) -> np.ndarray:
        hit = self._member_tiles(grid)
        if self.axis == "rows":
            return grid.join(np.repeat(hit, grid.col_tiles), np.tile(np.arange(grid.col_tiles), len(hit)))
        r = np.repeat(np.arange(grid.row_tiles), len(hit))
        return grid.join(r, np.tile(hit, grid.row_tiles))

    def estimate(self, grid: TileGrid) -> int:
        other = grid.col_tiles if self.axis == "rows" else grid.row_tiles
        return len(self._member_tiles(grid)) * other

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        tiles = r if self.axis == "rows" else c
        count, size = self._counts(grid, tiles)
        keys = self._tile_keys(grid.block_m if self.axis == "rows" else grid.block_n)
        return [np.where(count == 0, -1, np.where(count == size, -2, keys[tiles]))]

    def describe(self) -> str:
        side = "query" if self.axis == "rows" else "key"
        return f"{side} in {self.tokens.describe()}"
