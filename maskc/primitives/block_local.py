"""block_local: queries attend the keys of their own block of `size` (i // b == j // b)."""

from __future__ import annotations

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.sizes import PositiveSize, size_at
from maskc.rules import BandRule, Rule


@register
class BlockLocal(Primitive):
    """Non-overlapping local blocks (a band of width zero on units of `size`)."""

    kind = "block_local"
    summary = "attention within non-overlapping blocks of `size` tokens"

    size: PositiveSize

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        return BandRule(unit=size_at(self.size, ctx.n, path.child("size"), 1), lo=0, hi=0, step=1, origin=path)
