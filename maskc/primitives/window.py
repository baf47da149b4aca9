"""window: each query attends the keys at offsets −before … after (times the dilation).

The rule behind it, `BandRule`, is the workhorse of the library: it holds when
d = j//g − i//g lies in [lo, hi] and d ≡ 0 (mod step). Causal masking, stride, block_local,
dense and axial are all bands too, so they share this predicate, layout builder and emitter.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.sizes import PositiveSize, Size, size_at
from maskc.rules import BandRule, Rule


@register
class Window(Primitive):
    """Sliding window: j = i + k·dilation for −before ≤ k ≤ after (on blocks with granularity: block)."""

    kind = "window"
    summary = "sliding window of offsets −before … after, optionally dilated or on blocks"

    before: Size | None = None
    after: Size | None = None
    size: Size | None = None
    dilation: PositiveSize = 1
    granularity: Literal["token", "block"] = "token"

    @model_validator(mode="after")
    def _one_way_to_size(self) -> Window:
        if self.size is not None and (self.before is not None or self.after is not None):
            raise ValueError("give either size or before/after, not both")
        if self.size is None and self.before is None and self.after is None:
            raise ValueError("give size, or before and/or after")
        return self

    def offsets(self, n: int, path: Origin) -> tuple[int, int]:
        """(before, after) in units of the dilation, at sequence length n."""
        if self.size is not None:
            size = size_at(self.size, n, path.child("size"), 0)
            return size // 2, size // 2
        before = size_at(self.before or 0, n, path.child("before"), 0)
        return before, size_at(self.after or 0, n, path.child("after"), 0)

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        before, after = self.offsets(ctx.n, path)
        unit = ctx.block_size if self.granularity == "block" else 1
        d = size_at(self.dilation, ctx.n, path.child("dilation"), 1)
        return BandRule(unit=unit, lo=-before * d, hi=after * d, step=d, origin=path)
