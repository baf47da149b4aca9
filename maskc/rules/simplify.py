"""Equivalent rules that lay out faster. Layout only: element rules keep the spec's own shape.

A union of several token sets on one axis (the Sparse Transformer's c summary columns, written
as c `global` entries) makes every tile a meeting of partial children, each settled by
evaluating elements; one merged token set is classified by counting. The merged rule holds
exactly where the union does.
"""

from __future__ import annotations

import numpy as np

from maskc import limits
from maskc.rules.base import Rule
from maskc.rules.combinators import CombinatorRule, DifferenceRule, UnionRule
from maskc.rules.rewrite import rewrite
from maskc.rules.tokens import TokenSet, TokenSetRule


def layout_rule(rule: Rule) -> Rule:
    """`rule` with token sets on the same axis under a union merged into one."""
    return rewrite(rule, node=_merged_node)


def _merged_node(rule: CombinatorRule, kids: list[Rule]) -> Rule:
    if isinstance(rule, UnionRule):
        kids = _merge_token_sets(kids)
    if len(kids) == 1 and not isinstance(rule, DifferenceRule):
        return kids[0]
    return rule.with_kids(kids)


def _merge_token_sets(kids: list[Rule]) -> list[Rule]:
    out: list[Rule] = []
    for axis in ("rows", "columns"):
        sets = [kid for kid in kids if isinstance(kid, TokenSetRule) and kid.axis == axis]
        out += [kid for kid in sets if _size(kid.tokens) > limits.MAX_GLOBAL_TOKENS]
        sets = [kid for kid in sets if _size(kid.tokens) <= limits.MAX_GLOBAL_TOKENS]
        if len(sets) < 2:
            out += sets
            continue
        n = sets[0].tokens.n
        members = np.concatenate([_positions(s.tokens) for s in sets])
        out.append(TokenSetRule(TokenSet(n, tokens=members), axis, sets[0].origin))
    return [kid for kid in kids if not isinstance(kid, TokenSetRule)] + out


def _size(tokens: TokenSet) -> int:
    """How many members a token set has."""
    if tokens.positions is not None:
        return len(tokens.positions)
    if tokens.first is not None:
        return tokens.first
    return -(-(tokens.n - tokens.offset) // tokens.every)


def _positions(tokens: TokenSet) -> np.ndarray:
    """The members of a token set (as many as it has: `first` and `every` sets list theirs)."""
    if tokens.positions is not None:
        return tokens.positions
    if tokens.first is not None:
        return np.arange(tokens.first, dtype=np.int64)
    return np.arange(tokens.offset, tokens.n, tokens.every, dtype=np.int64)
