"""global: a set G of tokens that attend everything and/or are attended by everything.

`TokenSetRule` holds when the query (rows) or the key (columns) is in G. G is a token
list, the first k tokens, or every l-th token from an offset; each has a closed-form
count over a range, which gives exact tile classes without touching elements.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import NonNegativeInt, PositiveInt, model_validator

from maskc.codegen import TritonEmitter
from maskc.grid import TileGrid
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.combinators import UnionRule
from maskc.rule import Rule, TileClass


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

    def emit(self, em: TritonEmitter, idx: str) -> str:
        if self.member is not None:
            table = em.table(self.member.astype(np.int32), "members")
            return f"(tl.load({table} + {idx}, mask={idx} < {em.runtime(self.n, 'n')}, other=0) != 0)"
        if self.first is not None:
            return f"({idx} < {em.constant(self.first, 'first')})"
        return f"({idx} % {em.constant(self.every, 'every')} == {em.constant(self.offset, 'offset')})"

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

    def __init__(self, tokens: TokenSet, axis: Literal["rows", "columns"], origin: str) -> None:
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

    def emit_triton(self, em: TritonEmitter) -> str:
        return self.tokens.emit(em, em.q if self.axis == "rows" else em.k)

    def describe(self) -> str:
        side = "query" if self.axis == "rows" else "key"
        return f"{side} in {self.tokens.describe()}"


@register
class Global(Primitive):
    """Global tokens: exactly one of `tokens`, `first`, or `every` (with `offset`)."""

    kind = "global"
    summary = "tokens G that attend all keys (rows), are attended by all queries (columns), or both"

    tokens: list[NonNegativeInt] | None = None
    first: PositiveInt | None = None
    every: PositiveInt | None = None
    offset: NonNegativeInt | None = None
    direction: Literal["both", "rows", "columns"] = "both"
    #: "sequence": positions of the sequence; "document": positions counted from each document's
    #: start, holding within that document.
    per: Literal["sequence", "document"] = "sequence"

    @model_validator(mode="after")
    def _one_selector(self) -> Global:
        given = [name for name in ("tokens", "first", "every") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of tokens, first, every (got {', '.join(given) or 'none'})")
        if self.offset is not None and self.every is None:
            raise ValueError("offset goes with every")
        if self.every is not None and (self.offset or 0) >= self.every:
            raise ValueError(f"offset must be below every ({self.every}), got {self.offset}")
        if self.tokens is not None:
            if not self.tokens:
                raise ValueError("tokens is empty; list at least one position")
            seen = [t for t in set(self.tokens) if self.tokens.count(t) > 1]
            if seen:
                raise ValueError(f"tokens lists {sorted(seen)} more than once")
        return self

    def token_set(self, ctx: LowerContext, path: str) -> TokenSet:
        if self.tokens is not None:
            too_big = [t for t in self.tokens if t >= ctx.n]
            if too_big:
                raise ctx.fail(f"{path}.tokens", f"global tokens {too_big} are not below seq_len {ctx.n}")
            return TokenSet(ctx.n, tokens=self.tokens)
        if self.first is not None:
            if self.first > ctx.n and self.per == "sequence":  # a document's first tokens may be all of it
                raise ctx.fail(f"{path}.first", f"first {self.first} exceeds seq_len {ctx.n}")
            return TokenSet(ctx.n, first=self.first)
        offset = self.offset or 0
        if offset >= ctx.n:
            raise ctx.fail(f"{path}.offset", f"offset {offset} is not below seq_len {ctx.n}: no global token")
        return TokenSet(ctx.n, every=self.every, offset=offset)

    def is_dynamic(self) -> bool:
        return self.per == "document"

    def lower(self, ctx: LowerContext, path: str) -> Rule:
        tokens = self.token_set(ctx, path)
        if self.per == "document":
            from maskc.primitives.document import per_document  # document builds on this module's token sets

            return per_document(ctx, tokens, self.direction, path)
        if self.direction == "both":
            return UnionRule(
                [TokenSetRule(tokens, "rows", f"{path}(rows)"), TokenSetRule(tokens, "columns", f"{path}(columns)")],
                origin=path,
            )
        return TokenSetRule(tokens, self.direction, path)
