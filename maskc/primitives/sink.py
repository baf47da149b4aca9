"""sink: every query attends the first `count` keys (StreamingLLM's attention sinks), of the sequence
or, with `per: document`, of the query's own document."""

from __future__ import annotations

from typing import Literal

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.document import per_document
from maskc.primitives.sizes import PositiveSize, size_at
from maskc.rules import Rule, TokenSet, TokenSetRule


@register
class Sink(Primitive):
    """Attention sinks: j < count, i.e. the first `count` tokens as global columns."""

    kind = "sink"
    summary = "every query attends the first `count` keys"

    count: PositiveSize
    #: "sequence": the first keys of the sequence; "document": the first keys of the query's document.
    per: Literal["sequence", "document"] = "sequence"

    def is_dynamic(self) -> bool:
        return self.per == "document"

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        count = size_at(self.count, ctx.n, path.child("count"), 1)
        if count > ctx.n and self.per == "sequence":  # a document's first keys may be all of it
            raise ctx.fail(path.child("count"), f"count {count} exceeds seq_len {ctx.n}")
        tokens = TokenSet(ctx.n, first=count)
        if self.per == "document":
            return per_document(ctx, tokens, "columns", path)
        return TokenSetRule(tokens, "columns", path)
