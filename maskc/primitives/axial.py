"""axial: a sequence read as rows of `width`; attend the same row or the same column."""

from __future__ import annotations

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.sizes import PositiveSize, size_at
from maskc.rules import BandRule, Rule, UnionRule


@register
class Axial(Primitive):
    """Axial attention over an image flattened row by row: i // W == j // W or i ≡ j (mod W)."""

    kind = "axial"
    summary = "same row (i // W == j // W) or same column (i mod W == j mod W)"

    width: PositiveSize

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        width = size_at(self.width, ctx.n, path.child("width"), 1)
        same_row = BandRule(unit=width, lo=0, hi=0, step=1, origin=path.with_part("row"))
        same_column = BandRule(unit=1, lo=None, hi=None, step=width, origin=path.with_part("column"))
        return UnionRule([same_row, same_column], origin=path)
