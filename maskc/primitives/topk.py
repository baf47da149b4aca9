"""topk: each query block attends the k key blocks that score highest against it, chosen at run time.

For query block I and key block J (positions grouped by the spec's block_size B), score(I, J) is
the mean query of I dotted with the mean key of J, in float32, per batch and head; each query
block keeps the `blocks` best key blocks among its candidates (every key block, or J ≤ I when the
spec is causal), ties going to the lower J, all of them when there are fewer candidates.
`maskc.selection` computes the choice; `SelectedBlocksRule` is the resolved mask.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

import numpy as np
from pydantic import PositiveInt

from maskc.codegen import TritonEmitter
from maskc.grid import TileGrid
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.deferred import DeferredRule
from maskc.rule import Rule, TileClass


@register
class Topk(Primitive):
    """Top-k block selection (NSA's selected branch): the k best-scoring key blocks per query block."""

    kind = "topk"
    summary = "each query block attends the k key blocks whose mean key best matches its mean query (run time)"

    blocks: PositiveInt
    #: "head": every head selects its own blocks; "group": the query heads sharing a key/value head
    #: select together, by the mean of their scores.
    share: Literal["head", "group"] = "head"

    def is_dynamic(self) -> bool:
        return True

    def lower(self, ctx: LowerContext, path: str) -> Rule:
        return TopkRule(self, ctx.block_size, ctx.causal, ctx.n, path)


class TopkRule(DeferredRule):
    """The selected blocks, decided by q and k (`maskc.selection`): resolved on the host
    (`SelectedBlocksRule`), or on the GPU by the predicate over the call's selection table."""

    def __init__(self, params: Topk, block: int, causal: bool, n: int, origin: str) -> None:
        self.params, self.block, self.causal, self.n, self.origin = params, block, causal, n, origin

    def emit_triton(self, em: TritonEmitter) -> str:
        """The call's selection is one (blocks × blocks) table per table index (batch · heads + head)."""
        table = em.call_input(f"selected:{self.origin}", "selected")
        size, n = em.constant(self.block, "block"), em.runtime(self.n, "n")
        width = em.runtime(-(-self.n // self.block), "blocks")
        at = f"({em.table_index}.to(tl.int64) * {width} + {em.q} // {size}) * {width} + {em.k} // {size}"
        return f"(tl.load({table} + {at}, mask=({em.q} < {n}) & ({em.k} < {n}), other=0) != 0)"

    def describe(self) -> str:
        return f"top-{self.params.blocks} blocks of {self.block}"


class SelectedBlocksRule(Rule):
    """Holds when the key's block is selected for the query's block: selected[i // B, j // B]."""

    def __init__(self, selected: np.ndarray, block: int, n: int, origin: str) -> None:
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

    def emit_triton(self, em: TritonEmitter) -> str:
        table = em.table(self.selected.astype(np.int32).reshape(-1), "selected")
        size, width = em.constant(self.block, "block"), em.runtime(self.selected.shape[1], "blocks")
        n = em.runtime(self.n, "n")
        inside = f"({em.q} < {n}) & ({em.k} < {n})"
        return f"(tl.load({table} + ({em.q} // {size}) * {width} + {em.k} // {size}, mask={inside}, other=0) != 0)"

    def describe(self) -> str:
        return f"selected blocks of {self.block}"
