"""Rules over token grids: a key holds when, on every axis, its coordinate lies in the query's window.

Neighbourhood attention (NATTEN) and sliding-tile attention (STA) are both products of
per-axis windows: along axis a, query coordinate q attends keys lo[q] ≤ k ≤ hi[q] with
k ≡ q (mod step). Within a residue class lo and hi never decrease and consecutive windows
touch, so over an interval of queries the windows' union and intersection are intervals
too. A tile of the n × n matrix covers a few coordinate boxes (a run of positions in
row-major or tiled order), so its class is exact in closed form: per pair of boxes, any
(all) pairs hold when every axis has some (all) pairs holding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from maskc.grid import TileGrid, group_ids
from maskc.origin import Origin
from maskc.rules.base import Rule, TileClass, uniform_tiles_alike
from maskc.rules.canvas import Canvas

#: Tile pairs whose candidate test or signature is computed in one batch.
_PAIR_BATCH = 1 << 16


@dataclass(frozen=True)
class AxisWindow:
    """Along one axis of size S: query coordinate q attends keys lo[q] … hi[q] with k ≡ q (mod step)."""

    lo: np.ndarray
    hi: np.ndarray
    step: int = 1

    @property
    def size(self) -> int:
        return len(self.lo)

    @property
    def widest(self) -> int:
        """The most keys one query attends along this axis."""
        return int(((self.hi - self.lo) // self.step).max()) + 1

    def holds(self, q: np.ndarray, k: np.ndarray) -> np.ndarray:
        out = (self.lo[q] <= k) & (k <= self.hi[q])
        if self.step > 1:
            out &= (k - q) % self.step == 0
        return out

    @cached_property
    def _reach(self) -> tuple[np.ndarray, np.ndarray]:
        """Smallest lo at or after q, largest hi at or before q: keys any query in an interval can reach."""
        return np.minimum.accumulate(self.lo[::-1])[::-1], np.maximum.accumulate(self.hi)

    def reach(self, q0: np.ndarray, q1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds that hold every key some query in q0 … q1 attends (exact when step is 1)."""
        low, high = self._reach
        last = self.size - 1
        return low[np.clip(q0, 0, last)], high[np.clip(q1, 0, last)]

    def classes(self, q0: np.ndarray, q1: np.ndarray, k0: np.ndarray, k1: np.ndarray) -> TileClass:
        """Whether some (any) and every (full) pair of queries q0 … q1 and keys k0 … k1 holds."""
        if self.step == 1:
            return TileClass(
                any=(self.lo[q0] <= k1) & (self.hi[q1] >= k0), full=(self.lo[q1] <= k0) & (self.hi[q0] >= k1)
            )
        any_ = np.zeros(np.broadcast(q0, k0).shape, dtype=bool)
        last = self.size - 1
        for residue in range(self.step):
            qa, qb = q0 + (residue - q0) % self.step, q1 - (q1 - residue) % self.step
            ka, kb = k0 + (residue - k0) % self.step, k1 - (k1 - residue) % self.step
            lo, hi = self.lo[np.clip(qa, 0, last)], self.hi[np.clip(qb, 0, last)]
            any_ |= (qa <= qb) & (ka <= kb) & (np.maximum(lo, ka) <= np.minimum(hi, kb))
        single = (q0 == q1) & (k0 == k1)
        return TileClass(any=any_, full=single & any_)


def natten_axis(size: int, kernel: int, dilation: int = 1, causal: bool = False) -> AxisWindow:
    """NATTEN's neighbourhood along one axis (stride 1).

    Dilation d splits the axis into d groups by coordinate mod d; in the group of q, of
    length L = ⌈(size − q mod d) / d⌉, sub-coordinates s = x // d follow the plain rule.
    Non-causal: centre = clamp(s_q, k // 2, L − 1 − k // 2), key when |centre − s_k| ≤ k // 2.
    Causal: key when 0 ≤ s_q − s_k < k (the window ends at the query; fewer keys near the start).
    """
    q = np.arange(size, dtype=np.int64)
    group, s = q % dilation, q // dilation
    length = (size - group + dilation - 1) // dilation
    if causal:
        first, last = np.maximum(s - kernel + 1, 0), s
    else:
        half = kernel // 2
        centre = np.clip(s, half, length - 1 - half)
        first, last = centre - half, centre + half
    return AxisWindow(lo=group + first * dilation, hi=group + last * dilation, step=dilation)


def sta_axis(size: int, tile: int, kernel: int) -> AxisWindow:
    """STA along one axis: in tiles of `tile` tokens, with k = kernel // tile tiles in the window,
    centre = clamp(q // tile, k // 2, tiles − 1 − (k // 2 + k mod 2 − 1)) and key tiles
    centre − k // 2 … centre + k // 2 + (k mod 2 − 1)."""
    q = np.arange(size, dtype=np.int64)
    tiles, k = size // tile, kernel // tile
    left, right = k // 2, k // 2 + (k % 2 - 1)
    centre = np.clip(q // tile, left, tiles - 1 - right)
    return AxisWindow(lo=(centre - left) * tile, hi=(centre + right + 1) * tile - 1)


class GridWindowRule(Rule):
    """Holds for two grid cells whose coordinates are within the query's window on every axis.

    Text tokens (positions after the grid) never hold here; primitives add them by union.
    """

    def __init__(self, canvas: Canvas, axes: list[AxisWindow], name: str, params: str, origin: Origin) -> None:
        self.canvas, self.axes, self.name, self.params, self.origin = canvas, axes, name, params, origin
        self._candidates: dict[TileGrid, np.ndarray] = {}
        self._boxes: dict[tuple[int, int], _TileBoxes] = {}

    # -- elements

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        i, j = np.asarray(i), np.asarray(j)
        out = self.canvas.is_cell(i) & self.canvas.is_cell(j)
        for axis, qa, ka in zip(self.axes, self.canvas.coords(i), self.canvas.coords(j)):
            out = out & axis.holds(qa, ka)
        return out

    # -- tiles

    def _tile_boxes(self, size: int, count: int) -> _TileBoxes:
        if (size, count) not in self._boxes:
            self._boxes[(size, count)] = _TileBoxes.build(self.canvas, size, count)
        return self._boxes[(size, count)]

    def _rows(self, grid: TileGrid) -> _TileBoxes:
        return self._tile_boxes(grid.block_m, grid.row_tiles)

    def _cols(self, grid: TileGrid) -> _TileBoxes:
        return self._tile_boxes(grid.block_n, grid.col_tiles)

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        rows, cols = self._rows(grid), self._cols(grid)
        r, c = np.broadcast_arrays(np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.int64))
        shape = r.shape
        r, c = r.reshape(-1), c.reshape(-1)
        any_ = np.zeros(len(r), dtype=bool)
        full = np.ones(len(r), dtype=bool)
        for a in range(rows.count):
            for b in range(cols.count):
                both = rows.valid[r, a] & cols.valid[c, b]
                pair_any, pair_full = both.copy(), both.copy()
                for axis_index, axis in enumerate(self.axes):
                    cls = axis.classes(
                        rows.lo[r, a, axis_index],
                        rows.hi[r, a, axis_index],
                        cols.lo[c, b, axis_index],
                        cols.hi[c, b, axis_index],
                    )
                    pair_any &= cls.any
                    pair_full &= cls.full
                any_ |= pair_any
                full &= pair_full | ~both
        full &= any_ & ~rows.has_text[r] & ~cols.has_text[c]
        return TileClass(any=any_.reshape(shape), full=full.reshape(shape))

    def _candidate_ids(self, grid: TileGrid) -> np.ndarray:
        """Tiles whose key box meets the box of keys their queries can reach (a superset of the non-empty)."""
        if grid not in self._candidates:
            rows, cols = self._rows(grid), self._cols(grid)
            reach = [axis.reach(rows.bbox_lo[:, a], rows.bbox_hi[:, a]) for a, axis in enumerate(self.axes)]
            found = []
            step = max(1, _PAIR_BATCH // max(grid.col_tiles, 1))
            for lo in range(0, grid.row_tiles, step):
                hit = rows.any_cell[lo : lo + step, None] & cols.any_cell[None, :]
                for a, (low, high) in enumerate(reach):
                    hit &= (low[lo : lo + step, None] <= cols.bbox_hi[None, :, a]) & (
                        high[lo : lo + step, None] >= cols.bbox_lo[None, :, a]
                    )
                r, c = np.nonzero(hit)
                found.append(grid.join(r + lo, c))
            self._candidates[grid] = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
        return self._candidates[grid]

    def blocks(self, grid: TileGrid) -> np.ndarray:
        ids = self._candidate_ids(grid)
        r, c = grid.split(ids)
        return ids[self.classify(grid, r, c).any]

    def estimate(self, grid: TileGrid) -> int:
        return len(self._candidate_ids(grid))

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        """Per tile: its key tile's relative coordinates, and each query's window relative to the key
        tile's corner, clipped to the key tile's span. Equal keys give equal masks (see `mask`)."""
        r, c = np.asarray(r, dtype=np.int64), np.asarray(c, dtype=np.int64)
        key_class, corner, span = self._key_tiles(grid)
        features = _ExactRows(lambda rows: self._query_features(grid, r[rows], corner[c[rows]], span[c[rows]]))
        columns = [key_class[c], features.classes(len(r), max(1, _PAIR_BATCH // grid.block_m))]
        return uniform_tiles_alike(self.classify(grid, r, c), columns)

    def _key_tiles(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per key tile: a class of its relative coordinates, its lowest corner, its span per axis."""
        keys = np.minimum(np.arange(grid.col_tiles * grid.block_n).reshape(grid.col_tiles, grid.block_n), grid.n - 1)
        cell = self.canvas.is_cell(keys)
        coords = np.stack(self.canvas.coords(keys), axis=-1)
        big = np.iinfo(np.int64).max
        corner = np.where(cell[..., None], coords, big).min(axis=1)
        corner = np.where(corner == big, 0, corner)
        span = np.where(cell[..., None], coords - corner[:, None, :], 0).max(axis=1)
        relative = np.where(cell[..., None], coords - corner[:, None, :], -1).reshape(grid.col_tiles, -1)
        return _ExactRows(lambda rows: relative[rows]).classes(grid.col_tiles, grid.col_tiles), corner, span

    def _query_features(self, grid: TileGrid, r: np.ndarray, corner: np.ndarray, span: np.ndarray) -> np.ndarray:
        """Per tile pair, its queries' windows relative to the key corner, clipped to the key span."""
        queries = grid.row_first(r)[:, None] + np.arange(grid.block_m)[None, :]
        cell = self.canvas.is_cell(queries)
        parts = []
        for a, (axis, q) in enumerate(zip(self.axes, self.canvas.coords(queries))):
            base, top = corner[:, a : a + 1], span[:, a : a + 1]
            parts.append(np.where(cell, np.clip(axis.lo[q] - base, 0, top + 1), -2))
            parts.append(np.where(cell, np.clip(axis.hi[q] - base, -1, top), -2))
            if axis.step > 1:
                parts.append(np.where(cell, (q - base) % axis.step, -2))
        return np.concatenate(parts, axis=1)

    def describe(self) -> str:
        return f"{self.name}[{self.params} on {self.canvas.describe()}]"

    def keys_per_query(self) -> int:
        """The most grid keys one query attends: the product of the axes' widest windows."""
        return int(np.prod([axis.widest for axis in self.axes]))


class _ExactRows:
    """Classes of equal rows of an integer matrix produced in batches by `make(rows)`.

    Rows are grouped by a 64-bit hash, then every row is compared with its group's first row
    and any row that differs gets a class of its own: exact, without holding the whole matrix.
    """

    def __init__(self, make: Callable[[np.ndarray], np.ndarray]) -> None:
        self.make = make

    def _batches(self, count: int, batch: int) -> Iterator[np.ndarray]:
        for lo in range(0, count, batch):
            yield np.arange(lo, min(lo + batch, count))

    def classes(self, count: int, batch: int) -> np.ndarray:
        hashes = np.zeros(count, dtype=np.uint64)
        weights: np.ndarray | None = None
        for rows in self._batches(count, batch):
            values = self.make(rows).astype(np.uint64)
            if weights is None:
                weights = np.random.default_rng(0).integers(1, 2**63, size=values.shape[1], dtype=np.uint64) | 1
            with np.errstate(over="ignore"):
                hashes[rows] = (values * weights).sum(axis=1) if values.shape[1] else 0
        first, inverse, _ = group_ids(hashes.view(np.int64))
        ids = inverse.copy()
        for rows in self._batches(count, batch):
            reps = first[inverse[rows]]
            differ = np.any(self.make(rows) != self.make(reps), axis=1)
            ids[rows[differ]] = count + rows[differ]
        return ids


@dataclass(frozen=True)
class _TileBoxes:
    """Per tile of `size` positions: its grid cells as up to `count` boxes, padded, and a bounding box."""

    lo: np.ndarray  # (tiles, count, ndim)
    hi: np.ndarray
    valid: np.ndarray  # (tiles, count)
    has_text: np.ndarray  # (tiles,)

    @property
    def count(self) -> int:
        return self.lo.shape[1]

    @cached_property
    def any_cell(self) -> np.ndarray:
        return self.valid.any(axis=1)

    @cached_property
    def bbox_lo(self) -> np.ndarray:
        return np.where(self.valid[..., None], self.lo, np.iinfo(np.int64).max).min(axis=1)

    @cached_property
    def bbox_hi(self) -> np.ndarray:
        return np.where(self.valid[..., None], self.hi, -1).max(axis=1)

    @classmethod
    def build(cls, canvas: Canvas, size: int, tiles: int) -> _TileBoxes:
        per_tile = [canvas.boxes(t * size, min((t + 1) * size, canvas.n) - 1) for t in range(tiles)]
        count = max(1, max(len(b) for b in per_tile))
        lo = np.zeros((tiles, count, canvas.ndim), dtype=np.int64)
        hi = np.zeros((tiles, count, canvas.ndim), dtype=np.int64)
        valid = np.zeros((tiles, count), dtype=bool)
        for t, boxes in enumerate(per_tile):
            for b, box in enumerate(boxes):
                lo[t, b], hi[t, b], valid[t, b] = box.lo, box.hi, True
        ends = np.minimum((np.arange(tiles) + 1) * size, canvas.n) - 1
        return cls(lo=lo, hi=hi, valid=valid, has_text=ends >= canvas.cells)
