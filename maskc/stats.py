"""Summary numbers of a compiled pattern: tiles, densities, FLOPs and memory against dense.

It reads any object with a compiled pattern's fields, so `CompiledPattern.stats()` calls it without
an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from maskc.grid import TileGrid
from maskc.spec import Spec

#: Stored tile area over active pairs from which `maskc compile` warns (3 of 4 scores wasted).
WASTE_LIMIT = 4.0


@dataclass(frozen=True)
class PatternStats:
    """Per-head averages over the heads of a compiled pattern."""

    name: str
    n: int
    heads: int
    block_m: int
    block_n: int
    distinct_patterns: int
    tiles_total: int
    tiles_stored: float
    tiles_full: float
    tiles_partial: float
    #: Active (i, j) pairs per head; None when part of the pattern is decided at run time.
    active_pairs: float | None
    #: active_pairs / n²: attention FLOPs against dense attention.
    element_density: float | None
    #: stored tile area / n²: what a block-sparse kernel computes against dense.
    tile_density: float
    ir_bytes: int
    dense_mask_bytes: int

    def as_dict(self) -> dict[str, Any]:
        """The fields for JSON; counts are per-head means, whole numbers when every head agrees."""
        data = asdict(self)
        for name in ("tiles_stored", "tiles_full", "tiles_partial", "active_pairs"):
            value = data[name]
            if isinstance(value, float) and value.is_integer():
                data[name] = int(value)
        return data

    def lines(self) -> list[str]:
        """The human-readable summary `maskc compile` prints."""
        static = " (static part; the rest is decided at run time)" if self.element_density is None else ""
        out = [
            f"pattern        {self.name}  (n = {self.n}, heads = {self.heads}, "
            f"{self.distinct_patterns} distinct pattern{'s' if self.distinct_patterns != 1 else ''})",
            f"tiles          {self.block_m} x {self.block_n}: {self.tiles_stored:,.0f} of {self.tiles_total:,} stored "
            f"({self.tiles_full:,.0f} full, {self.tiles_partial:,.0f} partial) per head{static}",
        ]
        if self.element_density is None:
            out.append("density        decided at run time (documents, or q and k)")
        else:
            out.append(f"density        {self.element_density:.4%} of pairs active ({self.active_pairs:,.0f} per head)")
            out.append(f"FLOPs vs dense {self.element_density:.4f}x{_times_fewer(self.element_density)}")
        out.append(f"kernel work    {self.tile_density:.4f}x dense (stored tile area){static}")
        out.extend(self._waste_warning())
        out.append(f"memory         IR {self.ir_bytes:,} bytes vs dense boolean mask {self.dense_mask_bytes:,} bytes")
        return out

    def _waste_warning(self) -> list[str]:
        """A warning when the stored tiles are mostly masked out: block sparsity then saves little.

        This is how a "sparse" kernel ends up as slow as dense attention (a stride lights every
        tile for one diagonal); better said at compile time than found after a training run.
        """
        if not self.element_density or self.tile_density < WASTE_LIMIT * self.element_density:
            return []
        waste = self.tile_density / self.element_density
        return [
            f"warning        the stored tiles hold {waste:,.1f}x the active pairs: a block-sparse kernel",
            f"               computes {self.tile_density:.2f}x dense work for {self.element_density:.2%} of the "
            "pairs; expect little gain over dense attention",
        ]


class LayoutSummary(Protocol):
    """What the summary reads of one layout (`maskc.ir.record.BlockLayout`)."""

    grid: TileGrid
    col_idx: np.ndarray

    @property
    def nnz(self) -> int: ...

    @property
    def full_count(self) -> int: ...

    def tile_rows(self) -> np.ndarray: ...

    def element_count(self) -> int: ...

    def nbytes(self) -> int: ...


class PatternSummary(Protocol):
    """What the summary reads of a compiled pattern (`maskc.ir.record.CompiledPattern`)."""

    spec: Spec
    n: int
    heads: int
    block_m: int
    block_n: int
    head_layout: np.ndarray

    @property
    def layouts(self) -> Sequence[LayoutSummary]: ...

    @property
    def grid(self) -> TileGrid: ...

    @property
    def dynamic(self) -> bool: ...


def _times_fewer(density: float) -> str:
    """A note like "  (8.2x fewer)" when the pattern saves work, nothing otherwise."""
    return f"  ({1 / density:,.1f}x fewer)" if 0 < density < 1 else ""


def _stored_area(layout: LayoutSummary) -> float:
    grid = layout.grid
    r, c = layout.tile_rows(), layout.col_idx.astype(np.int64)
    return float(((grid.row_last(r) - grid.row_first(r) + 1) * (grid.col_last(c) - grid.col_first(c) + 1)).sum())


def pattern_stats(pattern: PatternSummary) -> PatternStats:
    """Compute the summary (element counts are exact, and cached on the layouts)."""
    weights = [int((pattern.head_layout == k).sum()) / pattern.heads for k in range(len(pattern.layouts))]
    grid = pattern.grid

    def mean(values: list[float]) -> float:
        return sum(w * v for w, v in zip(weights, values))

    area = [_stored_area(layout) for layout in pattern.layouts]
    active = None if pattern.dynamic else mean([layout.element_count() for layout in pattern.layouts])
    n2 = float(pattern.n) ** 2
    return PatternStats(
        name=pattern.spec.name,
        n=pattern.n,
        heads=pattern.heads,
        block_m=pattern.block_m,
        block_n=pattern.block_n,
        distinct_patterns=len(pattern.layouts),
        tiles_total=grid.row_tiles * grid.col_tiles,
        tiles_stored=mean([layout.nnz for layout in pattern.layouts]),
        tiles_full=mean([layout.full_count for layout in pattern.layouts]),
        tiles_partial=mean([layout.nnz - layout.full_count for layout in pattern.layouts]),
        active_pairs=active,
        element_density=None if active is None else active / n2,
        tile_density=mean(area) / n2,
        ir_bytes=sum(layout.nbytes() for layout in pattern.layouts),
        dense_mask_bytes=pattern.n * pattern.n,
    )
