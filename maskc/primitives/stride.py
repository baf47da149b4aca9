"""stride: query i attends every key j with (i − j) mod s == 0 (an unbounded band of step s)."""

from __future__ import annotations

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.sizes import PositiveSize, size_at
from maskc.rules import BandRule, Rule


@register
class Stride(Primitive):
    """Strided attention (Sparse Transformer's second head)."""

    kind = "stride"
    summary = "keys at a multiple of `every` positions away"

    every: PositiveSize

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        step = size_at(self.every, ctx.n, path.child("every"), 1)
        return BandRule(unit=1, lo=None, hi=None, step=step, origin=path)
