"""sink: every query attends the first `count` keys (StreamingLLM's attention sinks)."""

from __future__ import annotations

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.sizes import PositiveSize, size_at
from maskc.rules import Rule, TokenSet, TokenSetRule


@register
class Sink(Primitive):
    """Attention sinks: j < count, i.e. the first `count` tokens as global columns."""

    kind = "sink"
    summary = "every query attends the first `count` keys"

    count: PositiveSize

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        count = size_at(self.count, ctx.n, path.child("count"), 1)
        if count > ctx.n:
            raise ctx.fail(path.child("count"), f"count {count} exceeds seq_len {ctx.n}")
        return TokenSetRule(TokenSet(ctx.n, first=count), "columns", path)
