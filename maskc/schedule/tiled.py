"""Tiled orders: a grid window (neighbourhood, sliding tiles) run as dense tiles.

A neighbourhood is a band on every axis of its canvas. In row-major storage one tile of the
n × n matrix is a thin stripe of an image row, and a query stripe's neighbourhood meets many key
stripes, each only in part. With the tokens grouped by boxes of the canvas (the tokens of a
t_1 × … × t_r box consecutive, boxes row-major, as NATTEN's fused kernels and STA lay them out) a
query box's neighbourhood covers a few key boxes, most of them wholly. A dilated axis is first
regrouped by residue (x mod d, then x // d), where its window is contiguous.

The pass keeps its element rule on original positions (`Pass.rule`). Its rule on pass positions
is the same rule tree with every grid window moved onto the regrouped canvas (`local_rule`), which
the IR lays out in closed form and a kernel evaluates without position tables. Text tokens after
the grid keep their positions, so text rows and columns stay as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from maskc.grid import TileGrid
from maskc.ir.build import build_layout, layout_from_tiles
from maskc.rules import AxisWindow, Canvas, EmptyRule, GridWindowRule, Rule, TokenSetRule
from maskc.rules.rewrite import rewrite
from maskc.schedule.decompose import Order, conjuncts, disjuncts
from maskc.schedule.passes import classify_by_elements, classify_candidates
from maskc.schedule.record import Pass

#: Tile shapes built exactly per pass tile shape, the best by the estimate first.
EXACT_CANDIDATES = 3


def axis_order(size: int, dilation: int) -> np.ndarray:
    """x → x' along one axis: coordinates grouped by x mod d, in order inside a group."""
    x = np.arange(size, dtype=np.int64)
    residue = x % dilation
    counts = np.bincount(residue, minlength=dilation)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return start[residue] + x // dilation


@dataclass(frozen=True)
class TiledCanvas:
    """`source`'s cells regrouped: dilated axes by residue, then stored box by box in `tile`."""

    source: Canvas
    dilation: tuple[int, ...]
    tile: tuple[int, ...]

    @cached_property
    def target(self) -> Canvas:
        return Canvas(shape=self.source.shape, tiles=self.tile, text=self.source.text)

    @cached_property
    def maps(self) -> tuple[np.ndarray, ...]:
        return tuple(axis_order(s, d) for s, d in zip(self.source.shape, self.dilation))

    @cached_property
    def permutation(self) -> np.ndarray:
        """Original position of every pass position (text tokens stay where they are)."""
        cells = np.arange(self.source.cells, dtype=np.int64)
        inverse = [np.argsort(m) for m in self.maps]
        coords = [inv[x] for inv, x in zip(inverse, self.target.coords(cells))]
        text = np.arange(self.source.cells, self.source.n, dtype=np.int64)
        return np.concatenate([self.source.positions(coords), text])

    @property
    def identity(self) -> bool:
        return bool(np.array_equal(self.permutation, np.arange(self.source.n)))

    def local_axis(self, axis: int, window: AxisWindow) -> AxisWindow | None:
        """The window on regrouped coordinates (contiguous), or None when its step is not the order's."""
        d = self.dilation[axis]
        if window.step != d:
            return None
        m = self.maps[axis]
        inverse = np.argsort(m)
        return AxisWindow(lo=m[window.lo[inverse]], hi=m[window.hi[inverse]])

    def local_window(self, rule: GridWindowRule) -> GridWindowRule | None:
        if rule.canvas != self.source:
            return None
        axes = [self.local_axis(a, w) for a, w in enumerate(rule.axes)]
        if any(a is None for a in axes):
            return None
        return GridWindowRule(self.target, [a for a in axes if a is not None], rule.name, rule.params, rule.origin)


class _NoClosedFormError(Exception):
    """A leaf whose pairs move in a way no rule on pass positions describes."""


def local_rule(rule: Rule, tiled: TiledCanvas) -> Rule | None:
    """`rule` on pass positions: grid windows moved onto the regrouped canvas, text token sets kept
    (text positions do not move); None when some leaf has no such form."""
    cells = tiled.source.cells

    def leaf(node: Rule) -> Rule | None:
        if isinstance(node, GridWindowRule):
            moved = tiled.local_window(node)
            if moved is None:
                raise _NoClosedFormError
            return moved
        if isinstance(node, TokenSetRule) and not node.tokens.contains(np.arange(cells)).any():
            return None
        if isinstance(node, EmptyRule):
            return None
        raise _NoClosedFormError

    try:
        return rewrite(rule, leaf)
    except _NoClosedFormError:
        return None


def tile_shapes(shape: tuple[int, ...], volume: int) -> list[tuple[int, ...]]:
    """Boxes whose sides divide the canvas's and whose cells number `volume`."""
    if not shape:
        return [()] if volume == 1 else []
    out = []
    for side in range(1, shape[0] + 1):
        if shape[0] % side == 0 and volume % side == 0:
            out += [(side, *rest) for rest in tile_shapes(shape[1:], volume // side)]
    return out


def estimated_area(windows: list[GridWindowRule], tile: tuple[int, ...]) -> float:
    """Key cells in the boxes a query box's window meets, per query: along an axis (regrouped, so
    contiguous) a window of w cells at a random offset meets 1 + (w − 1) / t boxes of side t, at
    most S / t. A ranking, not a figure: the chosen shapes are then built exactly."""
    best = 0.0
    for window in windows:
        boxes = math.prod(
            min(size / t, 1 + (w - 1) / t)
            for size, t, w in zip(window.canvas.shape, tile, (axis.widest for axis in window.axes))
        )
        best = max(best, boxes * math.prod(tile))
    return best


def _grid_windows(rule: Rule, canvas: Canvas) -> list[GridWindowRule]:
    return [c for d in disjuncts(rule) for c in conjuncts(d) if isinstance(c, GridWindowRule) and c.canvas == canvas]


def tiled_pass_for(rule: Rule, tiled: TiledCanvas, grid: TileGrid, reason: str) -> Pass:
    """The pass of `rule` in one tiled order, on `grid`'s tile shape; tiles exact."""
    perm = tiled.permutation
    local = local_rule(rule, tiled)
    pass_grid = TileGrid(len(perm), grid.block_m, grid.block_n)
    if local is not None:
        layout = build_layout(local, pass_grid)
        r, c, full = layout.tile_rows(), layout.col_idx.astype(np.int64), layout.full
        if any(d > 1 for d in tiled.dilation):
            # across a residue group's end the closed form may keep a tile with no pair: drop those
            partial = np.flatnonzero(~full)
            any_, _ = classify_by_elements(local.mask, len(perm), len(perm), r[partial], c[partial], *_block(grid))
            keep = np.ones(len(r), dtype=bool)
            keep[partial[~any_]] = False
            r, c, full = r[keep], c[keep], full[keep]
    else:
        # the pass's pairs lie in its grid windows' pairs: their tiles are the candidates
        windows = [tiled.local_window(w) for w in _grid_windows(rule, tiled.source)]
        found = [w.blocks(pass_grid) for w in windows if w is not None]
        ids = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
        r, c = pass_grid.split(ids)
        any_, full = classify_candidates(rule, perm, perm, r, c, *_block(grid))
        r, c, full = r[any_], c[any_], full[any_]
    layout = layout_from_tiles(local if local is not None else rule, pass_grid, r, c, full)
    identity = tiled.identity
    return Pass(
        lowering="tiled",
        reason=reason,
        rule=rule,
        q_index=perm,
        k_index=perm,
        q_identity=identity,
        k_identity=identity,
        block_m=grid.block_m,
        block_n=grid.block_n,
        tile=tiled.tile,
        local_rule=local,
        **layout.arrays(),
    )


def _block(grid: TileGrid) -> tuple[int, int]:
    return grid.block_m, grid.block_n


def box_shapes(shape: tuple[int, ...], grid: TileGrid) -> set[tuple[int, ...]]:
    """Boxes of the kernels' tile sizes (BLOCK_M or BLOCK_N cells); on a canvas that has none, the
    largest boxes below them (a box of one cell always exists)."""
    small, large = sorted((grid.block_m, grid.block_n))
    shapes = set(tile_shapes(shape, small)) | set(tile_shapes(shape, large))
    volume = small - 1
    while not shapes and volume >= 1:
        shapes, volume = set(tile_shapes(shape, volume)), volume - 1
    return shapes


def candidate_tiles(order: Order, grid: TileGrid, windows: list[GridWindowRule]) -> list[tuple[int, ...]]:
    """Tile shapes worth building: the best few by `estimated_area` among boxes of the kernels'
    tile sizes, and the canvas's own storage tiles when it has them (no permutation then)."""
    canvas = order.canvas
    assert canvas is not None
    ranked = sorted(box_shapes(canvas.shape, grid), key=lambda t: (estimated_area(windows, t), t))
    chosen = ranked[:EXACT_CANDIDATES]
    if canvas.tiles is not None and canvas.tiles not in chosen:
        chosen.append(canvas.tiles)
    return chosen


def tiled_pass(rule: Rule, order: Order, grid: TileGrid, reason: str, cost: Callable[[Pass], int]) -> Pass:
    """The cheapest pass of `rule` over the candidate tile shapes of its tiled order, by `cost`."""
    assert order.canvas is not None
    windows = _grid_windows(rule, order.canvas)
    best: Pass | None = None
    for tile in candidate_tiles(order, grid, windows):
        tiled = TiledCanvas(order.canvas, order.dilation, tile)
        candidate = tiled_pass_for(rule, tiled, grid, f"{reason}; boxes of {'x'.join(map(str, tile))}")
        if best is None or cost(candidate) < cost(best):
            best = candidate
    assert best is not None
    return best
