"""block_local: queries attend the keys of their own block of `size` (i // b == j // b)."""

from __future__ import annotations

from pydantic import PositiveInt

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.rules import BandRule, Rule


@register
class BlockLocal(Primitive):
    """Non-overlapping local blocks (a band of width zero on units of `size`)."""

    kind = "block_local"
    summary = "attention within non-overlapping blocks of `size` tokens"

    size: PositiveInt

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        return BandRule(unit=self.size, lo=0, hi=0, step=1, origin=path)
