"""Tile kinds: one int8 per tile, 0 empty, 1 partial, 2 full, and the combinators' algebra on them.

A run-time layout classifies every tile of a call's grid with torch ops on the device. A kind is what
the tables need (`compact_kinds` reads it): empty tiles are skipped, partial ones are stored and masked
by the exact predicate, full ones are stored and not masked. A classification is *sound* for a rule
when every tile holding a pair of the rule has kind ≥ 1 and every tile of kind 2 holds only pairs of
the rule (tiles are never claimed full wrongly; claiming partial is always allowed, since the
predicate is exact).

**Lemma.** If `a` and `b` are sound for rules A and B, then `maximum(a, b)` is sound for A ∪ B,
`minimum(a, b)` for A ∩ B and `minimum(a, 2 − b)` for A − B.

*Proof.* Union: a pair of A ∪ B lies in A or in B, so its tile has a ≥ 1 or b ≥ 1; a tile of kind 2
has a = 2 or b = 2, so all its pairs lie in A or all in B. Intersection: a pair of A ∩ B lies in both,
so a ≥ 1 and b ≥ 1; kind 2 needs a = b = 2, all pairs in both. Difference: a pair of A − B lies in A and
not in B, so a ≥ 1, and its tile is not all B, so b ≤ 1 and 2 − b ≥ 1; kind 2 needs a = 2 and b = 0:
every pair in A, none in B. ∎

The same algebra on boolean (any, full) pairs is what `maskc.primitives.combinators` does at compile
time; two partial children of a union stay partial here (the tile is stored and masked), which the
lemma allows. One int8 map per rule in place of two boolean ones halves the ops of every fold.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import reduce

import torch

EMPTY, PARTIAL, FULL = 0, 1, 2


def kinds_of(any_: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """(any, full) boolean maps → kinds. `full` should imply `any` (a full tile holds pairs): a tile
    marked full but not any becomes partial, which is sound but stores a tile that could be skipped."""
    return any_.to(torch.int8) + full


def union(kinds: Iterable[torch.Tensor]) -> torch.Tensor:
    """Kinds of the union of the children's rules (broadcast; pairwise, so a generator holds one
    child's map at a time)."""
    return reduce(torch.maximum, kinds)


def intersection(kinds: Iterable[torch.Tensor]) -> torch.Tensor:
    """Kinds of the intersection of the children's rules (broadcast, pairwise)."""
    return reduce(torch.minimum, kinds)


def difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kinds of A − B from those of A and B."""
    return torch.minimum(a, FULL - b)
