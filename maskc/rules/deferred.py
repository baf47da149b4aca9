"""Rules decided at run time: placeholders until the call's inputs (documents, q and k) resolve them."""

from __future__ import annotations

import numpy as np

from maskc.errors import DynamicPatternError
from maskc.grid import TileGrid
from maskc.rules.band import BandRule
from maskc.rules.base import EmptyRule, Rule, TileClass


class DeferredRule(Rule):
    """A leaf whose elements are known only at run time; every element question about it is deferred.

    Analyses use its static bounds: nothing holds for sure (lower), anything may hold (upper).
    """

    dynamic = True
    #: What decides the leaf at run time, for messages: "documents" or "q and k".
    decided_by = "q and k"

    def deferred_error(self) -> DynamicPatternError:
        return DynamicPatternError(
            f"{self.origin}: {self.describe()} is decided at run time from {self.decided_by}; "
            "resolve the pattern with them first"
        )

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        raise self.deferred_error()

    def blocks(self, grid: TileGrid) -> np.ndarray:
        raise self.deferred_error()

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        raise self.deferred_error()

    def estimate(self, grid: TileGrid) -> int:
        return grid.row_tiles * grid.col_tiles

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        raise self.deferred_error()

    def static_bound(self, lower: bool = True) -> Rule:
        return EmptyRule(self.origin) if lower else BandRule(1, None, None, 1, self.origin)
