"""dense: every query attends every key (a band with no bounds)."""

from __future__ import annotations

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.rules import BandRule, Rule


@register
class Dense(Primitive):
    """Full attention."""

    kind = "dense"
    summary = "every query attends every key"

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        return BandRule(unit=1, lo=None, hi=None, step=1, origin=path)
