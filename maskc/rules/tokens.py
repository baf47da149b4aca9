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

#: Up to this n a token list also keeps a membership table (n bytes) for fast element lookups;
#: past it every structure of a token list grows with the list, not with n.
_MEMBER_TABLE_LIMIT = 1 << 24
#: Positions per page of `TokenSet.pages` (2**PAGE_BITS, a multiple of 32).
PAGE_BITS = 12


class TokenSet:
    """A set of positions below n with vectorized membership and range counts.

    A token list is kept as its sorted positions (memory grows with the list, not with n);
    range counts are binary searches, and membership a table lookup up to n = 2**24 and a binary
    search past it. Kernels look members up in `pages` past that n.
    """

    def __init__(
        self,
        n: int,
        *,
        tokens: list[int] | np.ndarray | None = None,
        first: int | None = None,
        every: int | None = None,
        offset: int = 0,
    ) -> None:
        self.n, self.first, self.every, self.offset = n, first, every, offset
        self.positions: np.ndarray | None = None
        self._member: np.ndarray | None = None
        if tokens is not None:
            self.positions = np.unique(np.asarray(tokens, dtype=np.int64))
            if n <= _MEMBER_TABLE_LIMIT:
                self._member = self.member

    @property
    def member(self) -> np.ndarray | None:
        """Membership of every position as a boolean array of length n, for a token list at n up to
        2**24 (where a lookup table pays); None otherwise (a table at n = 2**31 - 1 is 2 GiB)."""
        if self.positions is None or self.n > _MEMBER_TABLE_LIMIT:
            return None
        if self._member is not None:
            return self._member
        member = np.zeros(self.n, dtype=bool)
        member[self.positions] = True
        return member

    def contains(self, idx: np.ndarray) -> np.ndarray:
        if self._member is not None:
            return self._member[idx]
        if self.positions is not None:
            if len(self.positions) == 0:  # a per-document list no document reaches
                return np.zeros(np.shape(idx), dtype=bool)
            at = np.minimum(np.searchsorted(self.positions, idx), len(self.positions) - 1)
            return self.positions[at] == idx
        if self.first is not None:
            return idx < self.first
        return idx % self.every == self.offset

    def pages(self) -> tuple[int, np.ndarray, np.ndarray]:
        """A token list's membership in memory that grows with the list: log2 of the page size (2**b
        positions), a directory with one entry per page (the page's number among those holding a
        member, or -1), and those pages' bits as int32 words (bit p % 32 of word p // 32 within its
        page). At n = 2**31 - 1 the directory is 2 MiB, and each page with a member 512 bytes."""
        assert self.positions is not None
        owners, where = np.unique(self.positions >> PAGE_BITS, return_inverse=True)
        directory = np.full(-(-self.n >> PAGE_BITS), -1, dtype=np.int32)
        directory[owners] = np.arange(len(owners), dtype=np.int32)
        words = np.zeros((len(owners), 1 << (PAGE_BITS - 5)), dtype=np.uint32)
        offset = self.positions & ((1 << PAGE_BITS) - 1)
        np.bitwise_or.at(words, (where.reshape(-1), offset >> 5), (1 << (offset & 31)).astype(np.uint32))
        return PAGE_BITS, directory, words.reshape(-1).view(np.int32)

    def count(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Members in lo..hi inclusive (0 ≤ lo ≤ hi < n)."""
        if self.positions is not None:
            return np.searchsorted(self.positions, hi, side="right") - np.searchsorted(self.positions, lo)
        if self.first is not None:
            return np.maximum(np.minimum(hi, self.first - 1) - lo + 1, 0)
        return (hi - self.offset) // self.every - (lo - 1 - self.offset) // self.every

    def tile_keys(self, size: int) -> np.ndarray:
        """Per tile of `size` positions, a key; equal keys mean equal membership patterns."""
        tiles = np.arange(-(-self.n // size), dtype=np.int64)
        if self.every is not None:
            return tiles * size % self.every
        if self.positions is None:
            return tiles
        # Tiles without a member share key 0; the others are keyed by the bit pattern of their members.
        owner, where = np.unique(self.positions // size, return_inverse=True)
        bits = np.zeros((len(owner), -(-size // 8)), dtype=np.uint8)
        offset = self.positions % size
        np.bitwise_or.at(bits, (where, offset // 8), (128 >> (offset % 8)).astype(np.uint8))
        keys = np.zeros(len(tiles), dtype=np.int64)
        keys[owner] = 1 + np.unique(bits, axis=0, return_inverse=True)[1].reshape(-1)
        return keys

    def describe(self) -> str:
        if self.positions is not None:
            shown = self.positions[:6].tolist()
            more = "…" if len(self.positions) > 6 else ""
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
