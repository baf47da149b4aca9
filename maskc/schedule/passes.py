"""A pass's tile tables in its own coordinates.

A token-order pass is laid out as the IR lays out any rule (`build_layout`). A permuted or
gathered pass has no closed-form tile classes, so its tiles are found in two steps: a cheap
superset of candidate tiles read off the order (a residue class's band of offsets) or off the
single layout's tile map (gathered sets), then an exact element evaluation of the candidates,
which also decides which tiles are full. The cost grows with the candidates' area, which is
about the pass's kernel work, never with n².
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from maskc.grid import TileGrid, ragged_ranges
from maskc.ir import BlockLayout
from maskc.ir.build import build_layout
from maskc.ir.record import csr_pointers
from maskc.rules import Rule, layout_rule
from maskc.schedule.decompose import Order
from maskc.schedule.record import Pass

if TYPE_CHECKING:
    import scipy.sparse as sp

#: Elements evaluated at once when candidate tiles are classified.
_BATCH_ELEMENTS = 1 << 22


def identity_pass(rule: Rule, grid: TileGrid, reason: str, layout: BlockLayout | None = None) -> Pass:
    """A pass in token order: the IR's own layout of `rule` (or `layout`, already built for it)."""
    layout = build_layout(rule, grid) if layout is None else layout
    positions = np.arange(grid.n, dtype=np.int64)
    return Pass(
        lowering="identity",
        reason=reason,
        rule=rule,
        q_index=positions,
        k_index=positions,
        q_identity=True,
        k_identity=True,
        block_m=grid.block_m,
        block_n=grid.block_n,
        **layout.arrays(),
    )


def residue_positions(n: int, s: int) -> np.ndarray:
    """Positions ordered by (i mod s, i // s): each residue class contiguous, in token order inside."""
    return np.argsort(np.arange(n) % s, kind="stable").astype(np.int64)


def residue_candidates(order: Order, grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
    """(row tile, column tile) candidates of a residue pass: per row, the keys of its class within
    the allowed class offsets; per row tile, the span of its rows' key ranges."""
    n, s, bm, bn = grid.n, order.modulus, grid.block_m, grid.block_n
    positions = residue_positions(n, s)
    residue, t = positions % s, positions // s
    count = -(-(n - np.arange(s)) // s)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    size = count[residue]
    lo = np.zeros_like(t) if order.step_lo is None else np.maximum(t + order.step_lo, 0)
    hi = size - 1 if order.step_hi is None else np.minimum(t + order.step_hi, size - 1)
    empty = lo > hi
    first = np.where(empty, n, start[residue] + lo)
    last = np.where(empty, -1, start[residue] + hi)
    tiles = np.arange(0, n, bm)
    tile_lo = np.minimum.reduceat(first, tiles) // bn
    tile_hi = np.maximum.reduceat(last, tiles)
    tile_hi = np.where(tile_hi < 0, -1, tile_hi // bn)
    return ragged_ranges(tile_lo, tile_hi)


def _side_map(positions: np.ndarray, pass_block: int, grid_block: int, grid_tiles: int) -> sp.csr_matrix:
    """Indicator (pass tiles × original tiles): which original tiles a pass tile's positions fall in."""
    import scipy.sparse as sp  # here: compiling and checking a spec need no scipy, only gathered passes

    pass_tiles = -(-len(positions) // pass_block)
    rows = np.arange(len(positions)) // pass_block
    return sp.csr_matrix(
        (np.ones(len(positions), dtype=np.int32), (rows, positions // grid_block)), shape=(pass_tiles, grid_tiles)
    )


def gathered_candidates(q_index: np.ndarray, k_index: np.ndarray, single: BlockLayout) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of a gathered pass: pass tiles meeting a stored tile of the single layout."""
    import scipy.sparse as sp

    grid = single.grid
    stored = sp.csr_matrix(
        (np.ones(single.nnz, dtype=np.int32), single.col_idx, single.row_ptr), shape=(grid.row_tiles, grid.col_tiles)
    )
    rows = _side_map(q_index, grid.block_m, grid.block_m, grid.row_tiles)
    cols = _side_map(k_index, grid.block_n, grid.block_n, grid.col_tiles)
    hits = (rows @ stored @ cols.T).tocoo()
    order = np.lexsort((hits.col, hits.row))
    return hits.row[order].astype(np.int64), hits.col[order].astype(np.int64)


def classify_by_elements(
    hold: Callable[[np.ndarray, np.ndarray], np.ndarray],
    nq: int,
    nk: int,
    r: np.ndarray,
    c: np.ndarray,
    bm: int,
    bn: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (any, full) of tiles (r, c) of an nq × nk problem by evaluating every element:
    `hold(rows, cols)` on row indices (T, BM, 1) and column indices (T, 1, BN), clipped into range."""
    any_, full = np.zeros(len(r), dtype=bool), np.zeros(len(r), dtype=bool)
    step = max(1, _BATCH_ELEMENTS // (bm * bn))
    for lo in range(0, len(r), step):
        rows = np.asarray(r[lo : lo + step], dtype=np.int64)[:, None] * bm + np.arange(bm)[None, :]
        cols = np.asarray(c[lo : lo + step], dtype=np.int64)[:, None] * bn + np.arange(bn)[None, :]
        valid = (rows < nq)[:, :, None] & (cols < nk)[:, None, :]
        result = hold(np.minimum(rows, nq - 1)[:, :, None], np.minimum(cols, nk - 1)[:, None, :])
        any_[lo : lo + step] = (result & valid).any(axis=(1, 2))
        full[lo : lo + step] = (result | ~valid).all(axis=(1, 2))
    return any_, full


def classify_candidates(
    rule: Rule, q_index: np.ndarray, k_index: np.ndarray, r: np.ndarray, c: np.ndarray, bm: int, bn: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (any, full) of candidate tiles, evaluating their elements on original positions
    (int64, as every rule's arithmetic expects: parameters reach 2**62)."""
    fast = layout_rule(rule)
    q64, k64 = q_index.astype(np.int64, copy=False), k_index.astype(np.int64, copy=False)

    def hold(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return fast.mask(q64[rows], k64[cols])

    return classify_by_elements(hold, len(q_index), len(k_index), r, c, bm, bn)


def permuted_pass(
    rule: Rule,
    order: Order,
    q_index: np.ndarray,
    k_index: np.ndarray,
    candidates: tuple[np.ndarray, np.ndarray],
    grid: TileGrid,
    reason: str,
) -> Pass:
    """A pass in a permuted or gathered order, its tiles the non-empty candidates."""
    r, c = candidates
    any_, full = classify_candidates(rule, q_index, k_index, r, c, grid.block_m, grid.block_n)
    r, c, full = r[any_], c[any_], full[any_]
    row_tiles, col_tiles = -(-len(q_index) // grid.block_m), -(-len(k_index) // grid.block_n)
    by_column = np.argsort(c, kind="stable")
    return Pass(
        lowering=order.kind,
        reason=reason,
        rule=rule,
        q_index=q_index,
        k_index=k_index,
        q_identity=order.kind == "gathered keys",
        k_identity=order.kind == "gathered queries",
        block_m=grid.block_m,
        block_n=grid.block_n,
        row_ptr=csr_pointers(r, row_tiles),
        col_idx=c.astype(np.int32),
        full=full,
        col_ptr=csr_pointers(c, col_tiles),
        row_idx=r[by_column].astype(np.int32),
        full_t=full[by_column],
        csc_to_csr=by_column.astype(np.int32),
        modulus=order.modulus,
    )


def lowered_pass(rule: Rule, order: Order, single: BlockLayout, reason: str) -> Pass:
    """The pass of `rule` in `order` (not token order)."""
    grid = single.grid
    if order.kind == "residue":
        positions = residue_positions(grid.n, order.modulus)
        return permuted_pass(rule, order, positions, positions, residue_candidates(order, grid), grid, reason)
    tokens = np.asarray(order.tokens, dtype=np.int64)
    everyone = np.arange(grid.n, dtype=np.int64)
    q_index, k_index = (everyone, tokens) if order.kind == "gathered keys" else (tokens, everyone)
    return permuted_pass(rule, order, q_index, k_index, gathered_candidates(q_index, k_index, single), grid, reason)
