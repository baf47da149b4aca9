"""The canvas of a token grid: each position's coordinates, in row-major or tiled storage order.

Image and video tokens form a grid ([H, W] or [T, H, W]) stored row-major (last axis fastest) or
tile by tile (tiles row-major over the canvas, tokens row-major inside a tile), optionally
followed by text tokens. Grid rules read coordinates through a `Canvas`, so the storage order
moves pairs around the n × n matrix and never changes which cells attend which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Box:
    """Coordinates lo[a] ≤ x[a] ≤ hi[a] on every axis a (inclusive)."""

    lo: tuple[int, ...]
    hi: tuple[int, ...]


def _row_major_boxes(p0: int, p1: int, shape: tuple[int, ...]) -> list[Box]:
    """Positions p0 … p1 of a row-major array of `shape`, as at most 2·rank − 1 boxes."""
    if p0 > p1:
        return []
    if len(shape) == 1:
        return [Box((p0,), (p1,))]
    inner = math.prod(shape[1:])
    a0, r0 = divmod(p0, inner)
    a1, r1 = divmod(p1, inner)
    rest = shape[1:]
    if a0 == a1:
        return [Box((a0, *b.lo), (a0, *b.hi)) for b in _row_major_boxes(r0, r1, rest)]
    out: list[Box] = []
    first_whole, last_whole = a0, a1
    if r0 > 0:
        out += [Box((a0, *b.lo), (a0, *b.hi)) for b in _row_major_boxes(r0, inner - 1, rest)]
        first_whole = a0 + 1
    if r1 < inner - 1:
        last_whole = a1 - 1
    if first_whole <= last_whole:
        out.append(Box((first_whole, *(0 for _ in rest)), (last_whole, *(s - 1 for s in rest))))
    if r1 < inner - 1:
        out += [Box((a1, *b.lo), (a1, *b.hi)) for b in _row_major_boxes(0, r1, rest)]
    return out


@dataclass(frozen=True)
class Canvas:
    """A grid of `shape` stored row-major, or in `tiles` (tile by tile), then `text` extra tokens."""

    shape: tuple[int, ...]
    tiles: tuple[int, ...] | None = None
    text: int = 0

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def cells(self) -> int:
        """Grid tokens: positions below this are cells of the grid, the rest text."""
        return math.prod(self.shape)

    @property
    def n(self) -> int:
        return self.cells + self.text

    @cached_property
    def _tile_grid(self) -> tuple[int, ...]:
        assert self.tiles is not None
        return tuple(s // t for s, t in zip(self.shape, self.tiles))

    def coords(self, pos: Any) -> list[np.ndarray]:
        """Coordinates (one array per axis) of grid positions; text positions get those of the last cell."""
        p = np.minimum(np.asarray(pos, dtype=np.int64), self.cells - 1)
        if self.tiles is None:
            return _unravel(p, self.shape)
        volume = math.prod(self.tiles)
        tile_coords = _unravel(p // volume, self._tile_grid)
        inner = _unravel(p % volume, self.tiles)
        return [tc * t + ic for tc, t, ic in zip(tile_coords, self.tiles, inner)]

    def positions(self, coords: list[np.ndarray] | tuple[Any, ...]) -> np.ndarray:
        """Storage positions of coordinates (the inverse of `coords` on the grid)."""
        c = [np.asarray(x, dtype=np.int64) for x in coords]
        if self.tiles is None:
            return _ravel(c, self.shape)
        tile = _ravel([x // t for x, t in zip(c, self.tiles)], self._tile_grid)
        inner = _ravel([x % t for x, t in zip(c, self.tiles)], self.tiles)
        return tile * math.prod(self.tiles) + inner

    def is_cell(self, pos: Any) -> np.ndarray:
        return np.asarray(pos) < self.cells

    def boxes(self, p0: int, p1: int) -> list[Box]:
        """The grid cells at positions p0 … p1 (text left out) as a few coordinate boxes."""
        p1 = min(p1, self.cells - 1)
        if self.tiles is None:
            return _row_major_boxes(p0, p1, self.shape)
        if p0 > p1:
            return []
        volume = math.prod(self.tiles)
        t0, r0 = divmod(p0, volume)
        t1, r1 = divmod(p1, volume)
        if t0 == t1:
            return self._inside_tile(t0, r0, r1)
        out = self._inside_tile(t0, r0, volume - 1) if r0 > 0 else []
        first, last = (t0 + 1 if r0 > 0 else t0), (t1 - 1 if r1 < volume - 1 else t1)
        for b in _row_major_boxes(first, last, self._tile_grid):
            lo = tuple(x * t for x, t in zip(b.lo, self.tiles))
            hi = tuple((x + 1) * t - 1 for x, t in zip(b.hi, self.tiles))
            out.append(Box(lo, hi))
        if r1 < volume - 1:
            out += self._inside_tile(t1, 0, r1)
        return out

    def _inside_tile(self, tile: int, r0: int, r1: int) -> list[Box]:
        origin = [int(x) * t for x, t in zip(_unravel(np.int64(tile), self._tile_grid), self.tiles or ())]
        return [
            Box(tuple(o + x for o, x in zip(origin, b.lo)), tuple(o + x for o, x in zip(origin, b.hi)))
            for b in _row_major_boxes(r0, r1, self.tiles or ())
        ]

    def describe(self) -> str:
        order = "" if self.tiles is None else f", tiles {'x'.join(map(str, self.tiles))}"
        text = f" + {self.text} text" if self.text else ""
        return f"grid {'x'.join(map(str, self.shape))}{order}{text}"


def _unravel(p: np.ndarray, shape: tuple[int, ...]) -> list[np.ndarray]:
    """Row-major coordinates of flat indices (np.unravel_index, written out: numpy 2.4's returns
    wrong values on large multi-dimensional index arrays)."""
    out = []
    for axis, size in enumerate(shape):
        stride = math.prod(shape[axis + 1 :])
        out.append(p // stride % size)
    return out


def _ravel(coords: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Row-major flat indices of coordinates."""
    flat = np.zeros(np.broadcast(*coords).shape, dtype=np.int64)
    for x, size in zip(coords, shape):
        flat = flat * size + x
    return flat
