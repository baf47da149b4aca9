"""Documents of packed sequences: "same document" and token sets counted from each document's start.

Decided by the call's documents (one id per position, non-decreasing): placeholders until then
(`DocumentRule`, `PerDocumentRule`), label rules once the ids are known (`SameDocumentRule`,
`per_document_rule`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from maskc.origin import Origin
from maskc.rules.base import Rule
from maskc.rules.combinators import IntersectRule, UnionRule
from maskc.rules.deferred import DeferredRule
from maskc.rules.labels import LabelRule
from maskc.rules.tokens import TokenSet, TokenSetRule

Direction = Literal["both", "rows", "columns"]


def dense_labels(ids: np.ndarray) -> np.ndarray:
    """Non-decreasing ids → document numbers 0, 1, … in order (equal ids, equal numbers)."""
    ids = np.asarray(ids)
    return np.concatenate([[0], np.cumsum(ids[1:] != ids[:-1])]).astype(np.int64) if len(ids) else ids


def document_ranks(labels: np.ndarray) -> np.ndarray:
    """Each position's distance from the start of its document (labels from `dense_labels`)."""
    starts = np.flatnonzero(np.diff(labels, prepend=-1))
    return np.arange(len(labels), dtype=np.int64) - starts[labels]


class DocumentRule(DeferredRule):
    """ "Same document", decided by the call's documents: resolved on the host (`SameDocumentRule`), or
    on the GPU by the predicate over the call's document numbers."""

    decided_by = "documents"

    def __init__(self, n: int, origin: Origin) -> None:
        self.n, self.origin = n, origin

    def describe(self) -> str:
        return "same document"


class SameDocumentRule(LabelRule):
    """Holds when the query and the key lie in one document (labels from `dense_labels`)."""

    def __init__(self, labels: np.ndarray, origin: Origin) -> None:
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


class PerDocumentRule(DeferredRule):
    """A token set counted from each document's start, on one side or both, within the document;
    decided by the call's documents."""

    decided_by = "documents"

    def __init__(self, within: TokenSet, direction: Direction, n: int, origin: Origin) -> None:
        self.within, self.direction, self.n, self.origin = within, direction, n, origin

    def describe(self) -> str:
        side = {"rows": "query", "columns": "key", "both": "query or key"}[self.direction]
        return f"{side} in {self.within.describe()} of its document"


def per_document_rule(ids: np.ndarray, within: TokenSet, direction: Direction, origin: Origin) -> Rule:
    """`within`, counted from each document's start, on the given side(s), inside the document."""
    labels = dense_labels(ids)
    tokens = DocumentTokens(within, labels)
    sides: list[Literal["rows", "columns"]] = ["rows", "columns"] if direction == "both" else [direction]  # type: ignore[list-item]
    parts: list[Rule] = [TokenSetRule(tokens, side, origin.with_part(side)) for side in sides]
    member = parts[0] if len(parts) == 1 else UnionRule(parts, origin=origin)
    return IntersectRule([SameDocumentRule(labels, origin.with_part("document")), member], origin=origin)
