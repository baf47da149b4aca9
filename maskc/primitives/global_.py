"""global: a set G of tokens that attend everything and/or are attended by everything.

`TokenSetRule` holds when the query (rows) or the key (columns) is in G. G is a token
list, the first k tokens, or every l-th token from an offset; each has a closed-form
count over a range, which gives exact tile classes without touching elements.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import NonNegativeInt, model_validator

from maskc import limits
from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.document import per_document
from maskc.primitives.sizes import PositiveSize, Size, size_at
from maskc.rules import Rule, TokenSet, TokenSetRule, UnionRule


@register
class Global(Primitive):
    """Global tokens: exactly one of `tokens`, `first`, or `every` (with `offset`, or `last`).

    `every: l, last: c` is the last c positions of every block of l (the Sparse Transformer's
    fixed pattern: positions p with p mod l ≥ l − c), the same set as c entries with offsets
    l − c … l − 1.
    """

    kind = "global"
    summary = "tokens G that attend all keys (rows), are attended by all queries (columns), or both"

    tokens: list[NonNegativeInt] | None = None
    first: PositiveSize | None = None
    every: PositiveSize | None = None
    offset: Size | None = None
    last: PositiveSize | None = None
    direction: Literal["both", "rows", "columns"] = "both"
    #: "sequence": positions of the sequence; "document": positions counted from each document's
    #: start, holding within that document.
    per: Literal["sequence", "document"] = "sequence"

    @model_validator(mode="after")
    def _one_selector(self) -> Global:
        # `offset` and `last` qualify `every`: said first, so `last: 8` alone is not "got none"
        for name, meaning in (("offset", "every l-th token from offset o"), ("last", "the last c of every block of l")):
            if getattr(self, name) is not None and self.every is None:
                raise ValueError(f"{name} goes with every ({meaning}): add `every: l`")
        given = [name for name in ("tokens", "first", "every") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of tokens, first, every (got {', '.join(given) or 'none'})")
        if self.offset is not None and self.last is not None:
            raise ValueError(
                "give offset (one position per block) or last (the last positions of every block), not both"
            )
        if isinstance(self.every, int) and isinstance(self.offset, int) and self.offset >= self.every:
            raise ValueError(f"offset must be below every ({self.every}), got {self.offset}")
        if isinstance(self.every, int) and isinstance(self.last, int) and self.last > self.every:
            raise ValueError(f"last must be at most every ({self.every}), got {self.last}")
        if self.tokens is not None:
            if not self.tokens:
                raise ValueError("tokens is empty; list at least one position")
            if len(self.tokens) > limits.MAX_GLOBAL_TOKENS:
                raise ValueError(limits.exceeds("the tokens list's length", len(self.tokens), "MAX_GLOBAL_TOKENS"))
            values, counts = np.unique(np.asarray(self.tokens, dtype=np.int64), return_counts=True)
            seen = values[counts > 1][:10].tolist()
            if seen:
                raise ValueError(f"tokens lists {seen}{' …' if len(seen) == 10 else ''} more than once")
        return self

    def token_sets(self, ctx: LowerContext, path: Origin) -> list[TokenSet]:
        """The set as token sets whose union it is: one, or one per residue for `last`."""
        if self.last is None:
            return [self.token_set(ctx, path)]
        every = size_at(self.every, ctx.n, path.child("every"), 1)  # type: ignore[arg-type]
        last = size_at(self.last, ctx.n, path.child("last"), 1)
        if last > every:
            raise ctx.fail(
                path.child("last"), f"last `{self.last}` is {last} at n = {ctx.n}, more than every = {every}"
            )
        if every - last >= ctx.n:
            raise ctx.fail(
                path.child("last"),
                f"the last {last} of every {every} start at {every - last}, not below seq_len {ctx.n}",
            )
        residues = min(every, ctx.n) - (every - last)
        if residues > limits.MAX_PATTERN_NODES:  # one token set (a rule, like a node) per residue
            raise ctx.fail(
                path.child("last"),
                f"last {last} makes {residues} token sets (one per residue), over the limit of "
                f"{limits.MAX_PATTERN_NODES} (maskc.limits.MAX_PATTERN_NODES)",
            )
        return [TokenSet(ctx.n, every=every, offset=o) for o in range(every - last, min(every, ctx.n))]

    def token_set(self, ctx: LowerContext, path: Origin) -> TokenSet:
        if self.tokens is not None:
            too_big = [t for t in self.tokens if t >= ctx.n][:10]
            if too_big:
                raise ctx.fail(path.child("tokens"), f"global tokens {too_big} are not below seq_len {ctx.n}")
            return TokenSet(ctx.n, tokens=self.tokens)
        if self.first is not None:
            first = size_at(self.first, ctx.n, path.child("first"), 1)
            if first > ctx.n and self.per == "sequence":  # a document's first tokens may be all of it
                raise ctx.fail(path.child("first"), f"first {first} exceeds seq_len {ctx.n}")
            return TokenSet(ctx.n, first=first)
        every = size_at(self.every, ctx.n, path.child("every"), 1)  # type: ignore[arg-type]
        offset = size_at(self.offset or 0, ctx.n, path.child("offset"), 0)
        if offset >= every:
            raise ctx.fail(
                path.child("offset"), f"offset `{self.offset}` is {offset} at n = {ctx.n}, not below every = {every}"
            )
        if offset >= ctx.n:
            raise ctx.fail(path.child("offset"), f"offset {offset} is not below seq_len {ctx.n}: no global token")
        return TokenSet(ctx.n, every=every, offset=offset)

    def is_dynamic(self) -> bool:
        return self.per == "document"

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        if self.per == "document":
            if self.last is not None:
                raise ctx.fail(path.child("per"), "per: document takes tokens, first or every with offset, not last")
            return per_document(ctx, self.token_set(ctx, path), self.direction, path)
        sets = self.token_sets(ctx, path)
        both = self.direction == "both"
        axes = ["rows", "columns"] if both else [self.direction]
        rules: list[Rule] = [
            TokenSetRule(tokens, axis, path.with_part(axis) if both else path)  # type: ignore[arg-type]
            for axis in axes
            for tokens in sets
        ]
        return rules[0] if len(rules) == 1 else UnionRule(rules, origin=path)
