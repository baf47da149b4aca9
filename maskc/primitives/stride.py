"""stride: query i attends every key j with (i − j) mod s == 0 (an unbounded band of step s)."""

from __future__ import annotations

from pydantic import PositiveInt

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.rules import BandRule, Rule


@register
class Stride(Primitive):
    """Strided attention (Sparse Transformer's second head)."""

    kind = "stride"
    summary = "keys at a multiple of `every` positions away"

    every: PositiveInt

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        return BandRule(unit=1, lo=None, hi=None, step=self.every, origin=path)
