"""document: queries attend keys of their own document; the documents are given at call time.

Packed batches hold several documents per sequence. A call passes `documents`, one integer id per
position, non-decreasing along the sequence. Compiled without them, the leaf is a placeholder
(`DocumentRule`); lowered with them (`LowerContext.documents`) it is a label rule: the query's
document equals the key's. `sink` and `global` with `per: document` count positions from each
document's start and hold within that document (`per_document`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from maskc.codegen import TritonEmitter
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.cluster import LabelRule
from maskc.primitives.combinators import IntersectRule, UnionRule
from maskc.primitives.deferred import DeferredRule
from maskc.primitives.global_ import TokenSet, TokenSetRule
from maskc.rule import Rule

Direction = Literal["both", "rows", "columns"]


def dense_labels(ids: np.ndarray) -> np.ndarray:
    """Non-decreasing ids → document numbers 0, 1, … in order (equal ids, equal numbers)."""
    ids = np.asarray(ids)
    return np.concatenate([[0], np.cumsum(ids[1:] != ids[:-1])]).astype(np.int64) if len(ids) else ids


def document_ranks(labels: np.ndarray) -> np.ndarray:
    """Each position's distance from the start of its document (labels from `dense_labels`)."""
    starts = np.flatnonzero(np.diff(labels, prepend=-1))
    return np.arange(len(labels), dtype=np.int64) - starts[labels]


@register
class Document(Primitive):
    """Packed documents: i and j lie in the same document (`documents=` at call time)."""

    kind = "document"
    summary = "queries attend keys of their own document (the documents are given at call time)"

    def is_dynamic(self) -> bool:
        return True

    def lower(self, ctx: LowerContext, path: str) -> Rule:
        if ctx.documents is None:
            return DocumentRule(ctx.n, path)
        return SameDocumentRule(dense_labels(ctx.documents), path)


class DocumentRule(DeferredRule):
    """ "Same document", decided by the call's documents: resolved on the host (`SameDocumentRule`), or
    on the GPU by the predicate over the call's document numbers (`emit_triton`)."""

    decided_by = "documents"

    def __init__(self, n: int, origin: str) -> None:
        self.n, self.origin = n, origin

    def describe(self) -> str:
        return "same document"

    def emit_triton(self, em: TritonEmitter) -> str:
        return same_document(em, self.n)


class SameDocumentRule(LabelRule):
    """Holds when the query and the key lie in one document (labels from `dense_labels`)."""

    def __init__(self, labels: np.ndarray, origin: str) -> None:
        super().__init__(labels, labels, origin)

    def describe(self) -> str:
        return "same document"


class DocumentTokens(TokenSet):
    """The positions whose rank within their document is in `within` (a token set over ranks)."""

    def __init__(self, within: TokenSet, labels: np.ndarray) -> None:
        super().__init__(len(labels), tokens=np.flatnonzero(within.contains(document_ranks(labels))).tolist())
        self.within = within

    def describe(self) -> str:
        return f"{self.within.describe()} of each document"


def same_document(em: TritonEmitter, n: int) -> str:
    """Triton: the query's and the key's document numbers (the call's "labels", (B, n) int32) are equal."""
    labels, size, row = em.call_input("labels", "labels"), em.runtime(n, "n"), f"{em.batch}.to(tl.int64) * {n}"
    query = f"tl.load({labels} + {row} + {em.q}, mask={em.q} < {size}, other=-1)"
    key = f"tl.load({labels} + {row} + {em.k}, mask={em.k} < {size}, other=-2)"
    return f"({query} == {key})"


class PerDocumentRule(DeferredRule):
    """A token set counted from each document's start, decided by the call's documents: resolved on the
    host (`per_document`) or on the GPU by the predicate over a per-call membership table."""

    decided_by = "documents"

    def __init__(self, within: TokenSet, direction: Direction, n: int, origin: str) -> None:
        self.within, self.direction, self.n, self.origin = within, direction, n, origin

    def emit_triton(self, em: TritonEmitter) -> str:
        members, size = em.call_input(f"members:{self.origin}", "members"), em.runtime(self.n, "n")
        row = f"{em.batch}.to(tl.int64) * {size}"
        sides = [em.q, em.k] if self.direction == "both" else [em.q if self.direction == "rows" else em.k]
        held = " | ".join(f"(tl.load({members} + {row} + {x}, mask={x} < {size}, other=0) != 0)" for x in sides)
        return f"({same_document(em, self.n)} & ({held}))"

    def describe(self) -> str:
        side = {"rows": "query", "columns": "key", "both": "query or key"}[self.direction]
        return f"{side} in {self.within.describe()} of its document"


def per_document(ctx: LowerContext, within: TokenSet, direction: Direction, origin: str) -> Rule:
    """`within` (positions counted from a document's start) on the given side, inside the document."""
    if ctx.documents is None:
        return PerDocumentRule(within, direction, ctx.n, origin)
    labels = dense_labels(ctx.documents)
    tokens = DocumentTokens(within, labels)
    sides = ["rows", "columns"] if direction == "both" else [direction]
    parts: list[Rule] = [TokenSetRule(tokens, side, f"{origin}({side})") for side in sides]  # type: ignore[arg-type]
    member = parts[0] if len(parts) == 1 else UnionRule(parts, origin=origin)
    return IntersectRule([SameDocumentRule(labels, f"{origin}(document)"), member], origin=origin)
