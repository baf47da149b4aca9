"""Top-k block selection: the blocks each query block attends, decided at run time from q and k.

`TopkRule` is the placeholder (`maskc.selection` computes the choice); `SelectedBlocksRule` the mask
once the selection is known: selected[i // B, j // B].
"""

from __future__ import annotations

from functools import cached_property
from typing import Protocol

import numpy as np

from maskc.grid import TileGrid
from maskc.origin import Origin
from maskc.rules.base import Rule, TileClass
from maskc.rules.deferred import DeferredRule


class TopkParams(Protocol):
    """What a top-k leaf carries: the spec's parameters (`maskc.primitives.Topk`)."""

    blocks: int
    share: str


class TopkRule(DeferredRule):
    """The selected blocks, decided by q and k (`maskc.selection`): resolved on the host
    (`SelectedBlocksRule`), or on the GPU by the predicate over the call's selection table."""

    def __init__(self, params: TopkParams, block: int, causal: bool, n: int, origin: Origin) -> None:
        self.params, self.block, self.causal, self.n, self.origin = params, block, causal, n, origin

    def describe(self) -> str:
        return f"top-{self.params.blocks} blocks of {self.block}"


class SelectedBlocksRule(Rule):
    """Holds when the key's block is selected for the query's block: selected[i // B, j // B]."""

    def __init__(self, selected: np.ndarray, block: int, n: int, origin: Origin) -> None:
        self.selected = np.asarray(selected, dtype=bool)
        self.block, self.n, self.origin = block, n, origin

    @cached_property
    def _prefix(self) -> np.ndarray:
        """2-D prefix sums of the selection, so any rectangle of blocks is counted in O(1)."""
        out = np.zeros((self.selected.shape[0] + 1, self.selected.shape[1] + 1), dtype=np.int64)
        out[1:, 1:] = self.selected.cumsum(axis=0).cumsum(axis=1)
        return out

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.selected[np.asarray(i) // self.block, np.asarray(j) // self.block]

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        r0, r1, c0, c1 = grid.unit_bounds(self.block)
        a, b, x, y = r0[r].astype(np.int64), r1[r] + 1, c0[c].astype(np.int64), c1[c] + 1
        p = self._prefix
        count = p[b, y] - p[a, y] - p[b, x] + p[a, x]
        return TileClass(any=count > 0, full=count == (b - a) * (y - x))

    def blocks(self, grid: TileGrid) -> np.ndarray:
        return np.flatnonzero(self.grid_classes(grid).any).astype(np.int64)

    def grid_classes(self, grid: TileGrid) -> TileClass:
        return self.classify(grid, *grid.axes())

    def estimate(self, grid: TileGrid) -> int:
        return grid.row_tiles * grid.col_tiles

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        return [grid.join(r, c)]

    def describe(self) -> str:
        return f"selected blocks of {self.block}"
