"""A pass as a square block-sparse problem for kernels that take one: its rule on pass positions.

Kernels evaluate their predicate on the positions of the rows and columns they hold. A pass's
pairs are defined on original positions, so `PositionedRule` reads the original position of pass
row p and pass column q from tables (padded with −1 to the pass's square size, max(nq, nk)) and
evaluates the pass's rule there: the predicate a kernel runs loads those tables. Padded rows and
columns hold nothing, so tiles that reach into the padding are never full.

Tile classes at the pass's own tile shape come from the pass's tables; at another shape (a
kernel configuration with other tiles) from candidates overlapping the stored tiles, evaluated
element by element, so every shape is exact.
"""

from __future__ import annotations

import numpy as np

from maskc.grid import TileGrid
from maskc.ir import BlockLayout, CompiledPattern
from maskc.ir.build import build_layout
from maskc.rules import Rule, TileClass, layout_rule
from maskc.schedule.passes import classify_by_elements
from maskc.schedule.record import Pass


class PositionedRule(Rule):
    """Holds for pass row p and pass column q when the pass's rule holds at their original positions."""

    def __init__(self, p: Pass) -> None:
        self.pass_ = p
        self.inner = p.rule
        self.origin = p.rule.origin
        self.size = max(p.nq, p.nk)
        self.q_positions = np.full(self.size, -1, dtype=np.int64)
        self.k_positions = np.full(self.size, -1, dtype=np.int64)
        self.q_positions[: p.nq] = p.q_index
        self.k_positions[: p.nk] = p.k_index
        self._fast = layout_rule(p.rule)

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        qi, kj = self.q_positions[np.asarray(i)], self.k_positions[np.asarray(j)]
        valid = (qi >= 0) & (kj >= 0)
        return valid & self._fast.mask(np.maximum(qi, 0), np.maximum(kj, 0))

    def _candidates(self, grid: TileGrid) -> np.ndarray:
        """Linear ids of the tiles of `grid` that overlap a stored tile of the pass (sorted)."""
        p = self.pass_
        r, c = p.tile_rows(), p.col_idx.astype(np.int64)
        r0, r1 = r * p.block_m // grid.block_m, (np.minimum((r + 1) * p.block_m, self.size) - 1) // grid.block_m
        c0, c1 = c * p.block_n // grid.block_n, (np.minimum((c + 1) * p.block_n, self.size) - 1) // grid.block_n
        span_r, span_c = r1 - r0 + 1, c1 - c0 + 1
        ids = [np.zeros(0, dtype=np.int64)]
        for a in range(int(span_r.max(initial=0))):
            for b in range(int(span_c.max(initial=0))):
                keep = (a < span_r) & (b < span_c)
                ids.append(grid.join(r0[keep] + a, c0[keep] + b))
        return np.unique(np.concatenate(ids))

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        any_, full = classify_by_elements(self.mask, grid.n, grid.n, r, c, grid.block_m, grid.block_n)
        return TileClass(any=any_, full=full)

    def tiles(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if (grid.block_m, grid.block_n) == (self.pass_.block_m, self.pass_.block_n):
            p = self.pass_
            r, c = p.tile_rows(), p.col_idx.astype(np.int64)
            inside = (np.minimum((r + 1) * p.block_m, self.size) <= p.nq) & (
                np.minimum((c + 1) * p.block_n, self.size) <= p.nk
            )
            return r, c, p.full & inside
        r, c = grid.split(self._candidates(grid))
        cls = self.classify(grid, r, c)
        return r[cls.any], c[cls.any], cls.full[cls.any]

    def blocks(self, grid: TileGrid) -> np.ndarray:
        r, c, _ = self.tiles(grid)
        return grid.join(r, c)

    def estimate(self, grid: TileGrid) -> int:
        return len(self._candidates(grid))

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        """Every tile its own class: permuted positions share no structure that is cheap to key."""
        return [grid.join(r, c)]

    def describe(self) -> str:
        return f"{self.inner.describe()} at the positions of a {self.pass_.label} pass"


def pass_pattern(pattern: CompiledPattern, p: Pass, name: str) -> CompiledPattern:
    """The pass as a square one-layout pattern a kernel runs as it runs any compiled pattern.

    A token-order pass keeps its own rule (no position tables), a pass whose rule has a closed
    form on its own positions (a tiled order) runs that; any other reads its positions through
    `PositionedRule`. One layout serves every head, as a pattern compiled for one head does.
    """
    local = p.local_rule if p.local_rule is not None else (p.rule if p.q_identity and p.k_identity else None)
    if local is not None:
        rule: Rule = local
        grid = TileGrid(p.nq, p.block_m, p.block_n)
        layout = BlockLayout(grid=grid, rule=rule, **{k: v for k, v in p.arrays().items() if not k.endswith("index")})
    else:
        rule = PositionedRule(p)
        layout = build_layout(rule, TileGrid(rule.size, p.block_m, p.block_n))
    return CompiledPattern(
        spec=pattern.spec,
        spec_hash=f"{pattern.spec_hash}-{name}",
        n=layout.grid.n,
        block_m=p.block_m,
        block_n=p.block_n,
        heads=1,
        layouts=(layout,),
        head_layout=np.zeros(1, dtype=np.int32),
    )
