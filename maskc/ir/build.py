"""Laying a rule out on the tile grid: the CSR and CSC tables of a `BlockLayout`.

Two paths give the same tables: whole-grid maps for rules that store most tiles (no sort), and
sorted tile lists for sparse rules (cost grows with the stored tiles).
"""

from __future__ import annotations

import numpy as np

from maskc import limits
from maskc.grid import TileGrid, transposed
from maskc.ir.record import BlockLayout, csr_pointers, pointers
from maskc.rules import Rule, TileClass, layout_rule

#: A layout is read off whole-grid maps when the grid has at most this many tiles per tile the
#: rule estimates: the maps' memory then stays proportional to what tile lists would take. At 4,
#: a quarter-full random map already compresses slower than its tile list sorts (measured).
_GRID_MAP_RATIO = 2


def _stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """Stable argsort; radix sort (linear time) when the keys fit in 16 bits."""
    if bound <= np.iinfo(np.uint16).max:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def build_layout(rule: Rule, grid: TileGrid) -> BlockLayout:
    """Layout of `rule`; a dynamic rule is laid out by its static lower bound. Grids and layouts
    past maskc.limits are refused before any table is built."""
    limits.check_grid(grid.n, grid.block_m, grid.block_n)
    static = layout_rule(rule.static_bound(lower=True) if rule.dynamic else rule)
    estimate = static.estimate(grid)
    limits.check_grid(grid.n, grid.block_m, grid.block_n, min(estimate, grid.row_tiles * grid.col_tiles))
    if grid.row_tiles * grid.col_tiles <= _GRID_MAP_RATIO * estimate:
        return layout_from_maps(rule, grid, static.grid_classes(grid))
    return layout_from_tiles(rule, grid, *static.tiles(grid))


def layout_from_maps(rule: Rule, grid: TileGrid, tiles: TileClass) -> BlockLayout:
    """CSR and CSC read off (row_tiles, col_tiles) maps: no sort and no per-tile index arithmetic."""
    stored, stored_t = tiles.any, transposed(tiles.any)
    csr_index = np.cumsum(stored, dtype=np.int32).reshape(stored.shape) - 1
    return BlockLayout(
        grid=grid,
        rule=rule,
        row_ptr=pointers(stored.sum(axis=1)),
        col_idx=np.broadcast_to(np.arange(grid.col_tiles, dtype=np.int32), stored.shape)[stored],
        full=tiles.full[stored],
        col_ptr=pointers(stored.sum(axis=0)),
        row_idx=np.broadcast_to(np.arange(grid.row_tiles, dtype=np.int32), stored_t.shape)[stored_t],
        full_t=transposed(tiles.full)[stored_t],
        csc_to_csr=transposed(csr_index)[stored_t],
    )


def layout_from_tiles(rule: Rule, grid: TileGrid, r: np.ndarray, c: np.ndarray, full: np.ndarray) -> BlockLayout:
    """CSR from tiles sorted by (row, column); CSC by a stable sort on the column."""
    order = _stable_order(c, grid.col_tiles)
    return BlockLayout(
        grid=grid,
        rule=rule,
        row_ptr=csr_pointers(r, grid.row_tiles),
        col_idx=c.astype(np.int32),
        full=full.astype(bool),
        col_ptr=csr_pointers(c, grid.col_tiles),
        row_idx=r[order].astype(np.int32),
        full_t=full[order].astype(bool),
        csc_to_csr=order.astype(np.int32),
    )
