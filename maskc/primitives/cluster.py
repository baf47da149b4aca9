"""cluster: queries attend keys of the same cluster, decided at run time from q and k.

At compile time the rule is symbolic (`ClusterRule`): analyses use its static bounds and
backends resolve it, once assignments are known, into a `LabelRule`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import NonNegativeInt, model_validator

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
    #: k-means refinement steps (a count, so it may be an expression in n too; lsh ignores it).
    iterations: PositiveSize = 4

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
        """The symbolic rule, with `clusters` and `iterations` evaluated at ctx.n (run time reads numbers)."""
        clusters = self._count_at(ctx, path, "clusters", "MAX_CLUSTERS")
        iterations = self._count_at(ctx, path, "iterations", "MAX_CLUSTER_ITERATIONS")
        if self.method == "lsh" and clusters % 2:
            raise ctx.fail(
                path.child("clusters"),
                f"lsh hashes to ±projections, so clusters must be even; `{self.clusters}` is {clusters}",
            )
        resolved = self.model_copy(update={"clusters": clusters, "iterations": iterations})
        return ClusterRule(resolved, ctx.n, path)  # type: ignore[arg-type]

    def _count_at(self, ctx: LowerContext, path: Origin, name: str, limit: str) -> int:
        """The field's value at ctx.n, at least 1 and within its limit in maskc.limits."""
        written = getattr(self, name)
        value = size_at(written, ctx.n, path.child(name), 1)
        if value > getattr(limits, limit):
            raise ctx.fail(path.child(name), f"`{written}` at n = {ctx.n}: " + limits.exceeds(name, value, limit))
        return value
