"""Cluster membership: symbolic at compile time (`ClusterRule`), resolved at run time (`LabelRule`).

Analyses use a cluster rule's static bounds; once assignments are known, `maskc.clustering`
replaces each cluster leaf by a label rule that holds where the query's and key's labels agree.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import numpy as np

from maskc.grid import TileGrid
from maskc.origin import Origin
from maskc.rules.base import Rule, TileClass
from maskc.rules.deferred import DeferredRule


class ClusterParams(Protocol):
    """What a cluster leaf carries: the spec's cluster parameters (`maskc.primitives.Cluster`)."""

    clusters: int
    method: str
    seed: int
    iterations: int


class ClusterRule(DeferredRule):
    """Cluster membership, decided by the cluster labels of q and k: resolved on the host (`LabelRule`),
    or on the GPU by the predicate over the call's label tables."""

    def __init__(self, params: ClusterParams, n: int, origin: Origin) -> None:
        self.params, self.n, self.origin = params, n, origin

    def describe(self) -> str:
        return f"cluster({self.params.clusters}, {self.params.method})"


class LabelRule(Rule):
    """Holds when the query's label equals the key's label (a resolved cluster)."""

    def __init__(self, q_labels: np.ndarray, k_labels: np.ndarray, origin: Origin) -> None:
        self.q_labels = np.asarray(q_labels, dtype=np.int64)
        self.k_labels = np.asarray(k_labels, dtype=np.int64)
        self.origin = origin
        self._tile_tables = lru_cache(maxsize=4)(self._build_tile_tables)

    def mask(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return self.q_labels[i] == self.k_labels[j]

    def _presence(self, labels: np.ndarray, size: int) -> np.ndarray:
        """(tiles, labels) boolean: which labels occur in each tile."""
        count = int(max(self.q_labels.max(initial=0), self.k_labels.max(initial=0))) + 1
        tiles = -(-len(labels) // size)
        hits = np.bincount(np.arange(len(labels)) // size * count + labels, minlength=tiles * count)
        return hits.reshape(tiles, count) > 0

    def _build_tile_tables(self, grid: TileGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self._presence(self.q_labels, grid.block_m)
        cols = self._presence(self.k_labels, grid.block_n)
        meet = (rows.astype(np.float32) @ cols.T.astype(np.float32)) > 0
        return rows, cols, meet

    def classify(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> TileClass:
        rows, cols, meet = self._tile_tables(grid)
        single = (rows.sum(axis=1) == 1)[r] & (cols.sum(axis=1) == 1)[c]
        any_ = meet[r, c]
        return TileClass(any=any_, full=any_ & single)

    def blocks(self, grid: TileGrid) -> np.ndarray:
        return np.flatnonzero(self._tile_tables(grid)[2]).astype(np.int64)

    def estimate(self, grid: TileGrid) -> int:
        return grid.row_tiles * grid.col_tiles

    def signature(self, grid: TileGrid, r: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
        return [grid.join(r, c)]

    def describe(self) -> str:
        return "same cluster label"
