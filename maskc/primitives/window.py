"""window: each query attends the keys at offsets −before … after (times the dilation).

The rule behind it, `BandRule`, is the workhorse of the library: it holds when
d = j//g − i//g lies in [lo, hi] and d ≡ 0 (mod step). Causal masking, stride, block_local,
dense and axial are all bands too, so they share this predicate, layout builder and emitter.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import NonNegativeInt, PositiveInt, model_validator

from maskc.codegen import TritonEmitter
from maskc.grid import TileGrid, ragged_ranges
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.rule import Rule, TileClass, uniform_tiles_alike


@register
class Window(Primitive):
    """Sliding window: j = i + k·dilation for −before ≤ k ≤ after (on blocks with granularity: block)."""

    kind = "window"
    summary = "sliding window of offsets −before … after, optionally dilated or on blocks"

    before: NonNegativeInt | None = None
    after: NonNegativeInt | None = None
    size: NonNegativeInt | None = None
    dilation: PositiveInt = 1
    granularity: Literal["token", "block"] = "token"

    @model_validator(mode="after")
    def _one_way_to_size(self) -> Window:
        if self.size is not None and (self.before is not None or self.after is not None):
            raise ValueError("give either size or before/after, not both")
        if self.size is None and self.before is None and self.after is None:
            raise ValueError("give size, or before and/or after")
        return self

    def offsets(self) -> tuple[int, int]:
        """(before, after) in units of the dilation."""
        if self.size is not None:
            return self.size // 2, self.size // 2
        return self.before or 0, self.after or 0

    def lower(self, ctx: LowerContext, path: str) -> Rule:
        before, after = self.offsets()
        unit = ctx.block_size if self.granularity == "block" else 1
        d = self.dilation
        return BandRule(unit=unit, lo=-before * d, hi=after * d, step=d, origin=path)


class BandRule(Rule):
    """j//unit − i//unit = d with lo ≤ d ≤ hi (None: open) and d ≡ 0 (mod step)."""

    def __init__(self, unit: int, lo: int | None, hi: int | None, step: int, origin: str) -> None:
        self.unit, self.lo, self.hi, self.step, self.origin = unit, lo, hi, step, origin

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
        """Smallest and largest d in each tile; every value between occurs."""
        row_lo, row_hi, col_lo, col_hi = grid.unit_bounds(self.unit)
        return col_lo[c] - row_hi[r], col_hi[c] - row_lo[r]

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        dmin, dmax = self._offset_range(grid, r, c)
        any_, full = np.ones(len(dmin), dtype=bool), np.ones(len(dmin), dtype=bool)
        if self.lo is not None:
            any_ &= dmax >= self.lo
            full &= dmin >= self.lo
        if self.hi is not None:
            any_ &= dmin <= self.hi
            full &= dmax <= self.hi
        if self.step > 1:
            any_ &= self._holds_a_multiple(dmin, dmax)
            full &= dmin == dmax
            full[full] = dmin[full] % self.step == 0
        return TileClass(any=any_, full=full)

    def _holds_a_multiple(self, dmin: np.ndarray, dmax: np.ndarray) -> np.ndarray:
        """Whether [max(dmin, lo), min(dmax, hi)] holds a multiple of step; ranges of step values always do."""
        lo = dmin if self.lo is None else np.maximum(dmin, self.lo)
        hi = dmax if self.hi is None else np.minimum(dmax, self.hi)
        out = np.ones(len(lo), dtype=bool)
        narrow = np.flatnonzero(hi - lo < self.step - 1)
        out[narrow] = hi[narrow] // self.step * self.step >= lo[narrow]
        return out

    def _col_tile_range(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
        r = np.arange(grid.row_tiles)
        g = self.unit
        u0, u1 = grid.row_first(r) // g, grid.row_last(r) // g
        jlo = np.zeros_like(u0) if self.lo is None else (u0 + self.lo) * g
        jhi = np.full_like(u1, grid.n - 1) if self.hi is None else (u1 + self.hi + 1) * g - 1
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
        g = self.unit
        i0, j0 = grid.row_first(r), grid.col_first(c)
        offset = j0 // g - i0 // g
        if self.lo is None and self.hi is None:
            offset = offset % self.step
        columns = [offset] if g == 1 else [i0 % g, j0 % g, offset]
        return uniform_tiles_alike(self.classify(grid, r, c), columns)

    def emit_triton(self, em: TritonEmitter) -> str:
        if self.unit == 1:
            d = f"({em.k} - {em.q})"
        else:
            g = em.constant(self.unit, "unit")
            d = f"({em.k} // {g} - {em.q} // {g})"
        terms = []
        if self.lo is not None:
            terms.append(f"({d} >= {em.constant(self.lo, 'lo')})")
        if self.hi is not None:
            terms.append(f"({d} <= {em.constant(self.hi, 'hi')})")
        if self.step > 1:
            terms.append(f"({d} % {em.constant(self.step, 'step')} == 0)")
        return " & ".join(terms) if terms else f"(({em.q} >= 0) & ({em.k} >= 0))"

    def describe(self) -> str:
        lo = "-inf" if self.lo is None else str(self.lo)
        hi = "inf" if self.hi is None else str(self.hi)
        unit = "" if self.unit == 1 else f" on blocks of {self.unit}"
        step = "" if self.step == 1 else f" step {self.step}"
        return f"band[{lo}..{hi}{step}{unit}]"
