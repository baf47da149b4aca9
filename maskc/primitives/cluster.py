"""cluster: queries attend keys of the same cluster, decided at run time from q and k.

At compile time the rule is symbolic (`ClusterRule`): analyses use its static bounds and
backends resolve it, once assignments are known, into a `LabelRule`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import NonNegativeInt, PositiveInt, model_validator

from maskc.codegen import TritonEmitter
from maskc.grid import TileGrid
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.deferred import DeferredRule
from maskc.rule import Rule, TileClass


@register
class Cluster(Primitive):
    """Content-based clusters (Routing Transformer: kmeans; Reformer: lsh)."""

    kind = "cluster"
    summary = "queries attend keys in the same cluster, assigned at run time (kmeans or lsh)"

    clusters: PositiveInt
    method: Literal["kmeans", "lsh"] = "kmeans"
    seed: NonNegativeInt = 0
    iterations: PositiveInt = 4

    @model_validator(mode="after")
    def _lsh_needs_even_buckets(self) -> Cluster:
        if self.method == "lsh" and self.clusters % 2:
            raise ValueError(f"lsh hashes to ±projections, so clusters must be even; got {self.clusters}")
        return self

    def is_dynamic(self) -> bool:
        return True

    def lower(self, ctx: LowerContext, path: str) -> Rule:
        return ClusterRule(self, ctx.n, path)


class ClusterRule(DeferredRule):
    """Cluster membership, decided by the cluster labels of q and k: resolved on the host (`LabelRule`),
    or on the GPU by the predicate over the call's label tables, one row per table index (batch · heads
    + head)."""

    def __init__(self, params: Cluster, n: int, origin: str) -> None:
        self.params, self.n, self.origin = params, n, origin

    def emit_triton(self, em: TritonEmitter) -> str:
        q_labels = em.call_input(f"q_labels:{self.origin}", "q_labels")
        k_labels = em.call_input(f"k_labels:{self.origin}", "k_labels")
        n = em.runtime(self.n, "n")
        row = f"{em.table_index}.to(tl.int64) * {n}"
        query = f"tl.load({q_labels} + {row} + {em.q}, mask={em.q} < {n}, other=-1)"
        key = f"tl.load({k_labels} + {row} + {em.k}, mask={em.k} < {n}, other=-2)"
        return f"({query} == {key})"

    def describe(self) -> str:
        return f"cluster({self.params.clusters}, {self.params.method})"


class LabelRule(Rule):
    """Holds when the query's label equals the key's label (a resolved cluster)."""

    def __init__(self, q_labels: np.ndarray, k_labels: np.ndarray, origin: str) -> None:
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

    def emit_triton(self, em: TritonEmitter) -> str:
        ql, kl = em.table(self.q_labels, "q_labels"), em.table(self.k_labels, "k_labels")
        n = em.runtime(len(self.q_labels), "n")
        query = f"tl.load({ql} + {em.q}, mask={em.q} < {n}, other=-1)"
        key = f"tl.load({kl} + {em.k}, mask={em.k} < {n}, other=-2)"
        return f"({query} == {key})"

    def describe(self) -> str:
        return "same cluster label"
