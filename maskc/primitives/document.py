"""document: queries attend keys of their own document; the documents are given at call time.

Packed batches hold several documents per sequence. A call passes `documents`, one integer id per
position, non-decreasing along the sequence. Compiled without them, the leaf is a placeholder
(`DocumentRule`); lowered with them (`LowerContext.documents`) it is a label rule: the query's
document equals the key's. `sink` and `global` with `per: document` count positions from each
document's start and hold within that document (`per_document`).
"""

from __future__ import annotations

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.rules import DocumentRule, PerDocumentRule, Rule, SameDocumentRule, TokenSet, dense_labels, per_document_rule
from maskc.rules.documents import Direction


@register
class Document(Primitive):
    """Packed documents: i and j lie in the same document (`documents=` at call time)."""

    kind = "document"
    summary = "queries attend keys of their own document (the documents are given at call time)"

    def is_dynamic(self) -> bool:
        return True

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        if ctx.documents is None:
            return DocumentRule(ctx.n, path)
        return SameDocumentRule(dense_labels(ctx.documents), path)


def per_document(ctx: LowerContext, within: TokenSet, direction: Direction, origin: Origin) -> Rule:
    """`within` (positions counted from a document's start) on the given side, inside the document."""
    if ctx.documents is None:
        return PerDocumentRule(within, direction, ctx.n, origin)
    return per_document_rule(ctx.documents, within, direction, origin)
