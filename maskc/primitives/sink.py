"""sink: every query attends the first `count` keys (StreamingLLM's attention sinks)."""

from __future__ import annotations

from pydantic import PositiveInt

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.rules import Rule, TokenSet, TokenSetRule


@register
class Sink(Primitive):
    """Attention sinks: j < count, i.e. the first `count` tokens as global columns."""

    kind = "sink"
    summary = "every query attends the first `count` keys"

    count: PositiveInt

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        if self.count > ctx.n:
            raise ctx.fail(path.child("count"), f"count {self.count} exceeds seq_len {ctx.n}")
        return TokenSetRule(TokenSet(ctx.n, first=self.count), "columns", path)
