"""global: a set G of tokens that attend everything and/or are attended by everything.

`TokenSetRule` holds when the query (rows) or the key (columns) is in G. G is a token
list, the first k tokens, or every l-th token from an offset; each has a closed-form
count over a range, which gives exact tile classes without touching elements.
"""

from __future__ import annotations

from typing import Literal

from pydantic import NonNegativeInt, PositiveInt, model_validator

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.document import per_document
from maskc.rules import Rule, TokenSet, TokenSetRule, UnionRule


@register
class Global(Primitive):
    """Global tokens: exactly one of `tokens`, `first`, or `every` (with `offset`)."""

    kind = "global"
    summary = "tokens G that attend all keys (rows), are attended by all queries (columns), or both"

    tokens: list[NonNegativeInt] | None = None
    first: PositiveInt | None = None
    every: PositiveInt | None = None
    offset: NonNegativeInt | None = None
    direction: Literal["both", "rows", "columns"] = "both"
    #: "sequence": positions of the sequence; "document": positions counted from each document's
    #: start, holding within that document.
    per: Literal["sequence", "document"] = "sequence"

    @model_validator(mode="after")
    def _one_selector(self) -> Global:
        given = [name for name in ("tokens", "first", "every") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of tokens, first, every (got {', '.join(given) or 'none'})")
        if self.offset is not None and self.every is None:
            raise ValueError("offset goes with every")
        if self.every is not None and (self.offset or 0) >= self.every:
            raise ValueError(f"offset must be below every ({self.every}), got {self.offset}")
        if self.tokens is not None:
            if not self.tokens:
                raise ValueError("tokens is empty; list at least one position")
            seen = [t for t in set(self.tokens) if self.tokens.count(t) > 1]
            if seen:
                raise ValueError(f"tokens lists {sorted(seen)} more than once")
        return self

    def token_set(self, ctx: LowerContext, path: Origin) -> TokenSet:
        if self.tokens is not None:
            too_big = [t for t in self.tokens if t >= ctx.n]
            if too_big:
                raise ctx.fail(path.child("tokens"), f"global tokens {too_big} are not below seq_len {ctx.n}")
            return TokenSet(ctx.n, tokens=self.tokens)
        if self.first is not None:
            if self.first > ctx.n and self.per == "sequence":  # a document's first tokens may be all of it
                raise ctx.fail(path.child("first"), f"first {self.first} exceeds seq_len {ctx.n}")
            return TokenSet(ctx.n, first=self.first)
        offset = self.offset or 0
        if offset >= ctx.n:
            raise ctx.fail(path.child("offset"), f"offset {offset} is not below seq_len {ctx.n}: no global token")
        return TokenSet(ctx.n, every=self.every, offset=offset)

    def is_dynamic(self) -> bool:
        return self.per == "document"

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        tokens = self.token_set(ctx, path)
        if self.per == "document":
            return per_document(ctx, tokens, self.direction, path)
        if self.direction == "both":
            return UnionRule(
                [
                    TokenSetRule(tokens, "rows", path.with_part("rows")),
                    TokenSetRule(tokens, "columns", path.with_part("columns")),
                ],
                origin=path,
            )
        return TokenSetRule(tokens, self.direction, path)
