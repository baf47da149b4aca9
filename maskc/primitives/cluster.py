"""cluster: queries attend keys of the same cluster, decided at run time from q and k.

At compile time the rule is symbolic (`ClusterRule`): analyses use its static bounds and
backends resolve it, once assignments are known, into a `LabelRule`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import NonNegativeInt, PositiveInt, model_validator

from maskc import limits
from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.sizes import PositiveSize, size_at
from maskc.rules import ClusterRule, Rule


@register
class Cluster(Primitive):
    """Content-based clusters (Routing Transformer: kmeans; Reformer: lsh)."""

    kind = "cluster"
    summary = "queries attend keys in the same cluster, assigned at run time (kmeans or lsh)"

    clusters: PositiveSize
    method: Literal["kmeans", "lsh"] = "kmeans"
    seed: NonNegativeInt = 0
    iterations: PositiveInt = 4

    @model_validator(mode="after")
    def _lsh_needs_even_buckets(self) -> Cluster:
        if isinstance(self.iterations, int) and self.iterations > limits.MAX_CLUSTER_ITERATIONS:
            raise ValueError(limits.exceeds("iterations", self.iterations, "MAX_CLUSTER_ITERATIONS"))
        if isinstance(self.clusters, int) and self.clusters > limits.MAX_CLUSTERS:
            raise ValueError(limits.exceeds("clusters", self.clusters, "MAX_CLUSTERS"))
        if self.method == "lsh" and isinstance(self.clusters, int) and self.clusters % 2:
            raise ValueError(f"lsh hashes to ±projections, so clusters must be even; got {self.clusters}")
        return self

    def is_dynamic(self) -> bool:
        return True

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        """The symbolic rule, with `clusters` evaluated at ctx.n (run time reads a number)."""
        clusters = size_at(self.clusters, ctx.n, path.child("clusters"), 1)
        if self.method == "lsh" and clusters % 2:
            raise ctx.fail(
                path.child("clusters"),
                f"lsh hashes to ±projections, so clusters must be even; `{self.clusters}` is {clusters}",
            )
        return ClusterRule(self.model_copy(update={"clusters": clusters}), ctx.n, path)  # type: ignore[arg-type]
