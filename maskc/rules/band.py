"""The band rule, the workhorse of the library: it holds when d = j//g − i//g lies in [lo, hi]
and d ≡ 0 (mod step). Window, causal masking, stride, block_local, dense and axial all lower to
bands, so they share this predicate and tile classifier.
"""

from __future__ import annotations

import numpy as np

from maskc.grid import TileGrid, ragged_ranges
from maskc.origin import Origin
from maskc.rules.base import Rule, TileClass, uniform_tiles_alike


class BandRule(Rule):
    """j//unit − i//unit = d with lo ≤ d ≤ hi (None: open) and d ≡ 0 (mod step)."""

    def __init__(self, unit: int, lo: int | None, hi: int | None, step: int, origin: Origin) -> None:
        self.unit, self.lo, self.hi, self.step, self.origin = unit, lo, hi, step, origin
        self._spans: dict[TileGrid, tuple[np.ndarray, np.ndarray]] = {}

    def _offsets(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return j // self.unit - i // self.unit

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        d = self._offsets(np.asarray(i), np.asarray(j))
        out = np.ones(d.shape, dtype=bool)
        if self.lo is not None:
            out &= d >= self.lo
        if self.hi is not None:
            out &= d <= self.hi
        if self.step > 1:
            out &= d % self.step == 0
        return out

    def _offset_range(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Smallest and largest d in each tile (r and c broadcast); every value between occurs."""
        row_lo, row_hi, col_lo, col_hi = grid.unit_bounds(self.unit)
        return col_lo[c] - row_hi[r], col_hi[c] - row_lo[r]

    def _limits(self, n: int) -> tuple[int | None, int | None, int]:
        """lo, hi and step as they act on offsets, which lie strictly between −n and n.

        A bound at or past ±n cuts nothing, and a step of n or more keeps only d = 0 as n does,
        so the classes are unchanged and every limit fits the int32 offsets.
        """
        lo = None if self.lo is None or self.lo <= -n else min(self.lo, n)
        hi = None if self.hi is None or self.hi >= n else max(self.hi, -n)
        return lo, hi, min(self.step, n)

    @staticmethod
    def _uncut(dmin: np.ndarray, dmax: np.ndarray, lo: int | None, hi: int | None) -> np.ndarray:
        """Tiles whose offsets all lie within the bounds."""
        out = np.ones(dmin.shape, dtype=bool)
        if lo is not None:
            out &= dmin >= lo
        if hi is not None:
            out &= dmax <= hi
        return out

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        return self._classes(grid.n, *self._offset_range(grid, r, c))

    def grid_classes(self, grid: TileGrid) -> TileClass:
        """Row bounds broadcast against column bounds: no per-tile gathers."""
        return self.classify(grid, *grid.axes())

    def _classes(self, n: int, dmin: np.ndarray, dmax: np.ndarray) -> TileClass:
        lo, hi, step = self._limits(n)
        any_ = np.ones(dmin.shape, dtype=bool)
        if lo is not None:
            any_ &= dmax >= lo
        if hi is not None:
            any_ &= dmin <= hi
        full = self._uncut(dmin, dmax, lo, hi)
        if step > 1:
            any_ &= self._holds_a_multiple(dmin, dmax, lo, hi, step)
            full &= dmin == dmax
            full[full] = dmin[full] % step == 0
        return TileClass(any=any_, full=full)

    @staticmethod
    def _holds_a_multiple(dmin: np.ndarray, dmax: np.ndarray, lo: int | None, hi: int | None, step: int) -> np.ndarray:
        """Whether [max(dmin, lo), min(dmax, hi)] holds a multiple of step; ranges of step values always do.

        The first multiple at or above a is a + (−a mod step), which needs no product that could
        leave int32. Tiles that miss the bounds may wrap in `b − a`; their `any` is false anyway.
        """
        a = dmin if lo is None else np.maximum(dmin, lo)
        b = dmax if hi is None else np.minimum(dmax, hi)
        width = b - a
        out = np.ones(a.shape, dtype=bool)
        narrow = width < step - 1
        out[narrow] = -a[narrow] % step <= width[narrow]
        return out

    def _col_tile_range(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
        """Per row tile, the first and last column tile it meets. Kept per grid: `estimate`, which
        picks the layout path, and then `tiles` need it."""
        if grid not in self._spans:
            self._spans[grid] = self._col_tile_span(grid)
        return self._spans[grid]

    def _col_tile_span(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
        r = np.arange(grid.row_tiles)
        g = self.unit
        lo, hi, _ = self._limits(grid.n)
        u0, u1 = grid.row_first(r) // g, grid.row_last(r) // g
        jlo = np.zeros_like(u0) if lo is None else (u0 + lo) * g
        jhi = np.full_like(u1, grid.n - 1) if hi is None else (u1 + hi + 1) * g - 1
        clo = np.clip(jlo, 0, grid.n) // grid.block_n
        chi = np.where(jhi < 0, -1, np.minimum(jhi, grid.n - 1) // grid.block_n)
        return clo, np.where(jlo > grid.n - 1, -1, chi)

    def tiles(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, c = ragged_ranges(*self._col_tile_range(grid))
        cls = self.classify(grid, r, c)
        if self.step > 1:
            return r[cls.any], c[cls.any], cls.full[cls.any]
        return r, c, cls.full

    def blocks(self, grid: TileGrid) -> np.ndarray:
        return grid.join(*self.tiles(grid)[:2])

    def estimate(self, grid: TileGrid) -> int:
        clo, chi = self._col_tile_range(grid)
        return int(np.maximum(chi - clo + 1, 0).sum())

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        """Where the bounds cut no offset of a strided tile, only the offset modulo the step shapes
        its mask, so such tiles share one class instead of one per diagonal."""
        g = self.unit
        i0, j0 = grid.row_first(r), grid.col_first(c)
        dmin, dmax = self._offset_range(grid, r, c)
        lo, hi, step = self._limits(grid.n)
        offset = j0 // g - i0 // g
        columns = [offset] if g == 1 else [i0 % g, j0 % g, offset]
        if step > 1:
            uncut = self._uncut(dmin, dmax, lo, hi)
            columns[-1] = np.where(uncut, offset % step, offset)
            columns.append(uncut)
        return uniform_tiles_alike(self._classes(grid.n, dmin, dmax), columns)

    def describe(self) -> str:
        lo = "-inf" if self.lo is None else str(self.lo)
        hi = "inf" if self.hi is None else str(self.hi)
        unit = "" if self.unit == 1 else f" on blocks of {self.unit}"
        step = "" if self.step == 1 else f" step {self.step}"
        return f"band[{lo}..{hi}{step}{unit}]"
