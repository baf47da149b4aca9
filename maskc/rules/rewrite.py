"""The one rule-tree rewrite: replace leaves, rebuild combinators, share what did not change.

Simplification for layout, the interval engine's token-set removal and run-time cluster
resolution are all this walk with different leaf and node functions.
"""

from __future__ import annotations

from collections.abc import Callable

from maskc.rules.base import Rule
from maskc.rules.combinators import CombinatorRule

#: A leaf's replacement, or None to keep the leaf.
LeafRewrite = Callable[[Rule], "Rule | None"]
#: A combinator rebuilt from its rewritten children.
NodeRewrite = Callable[[CombinatorRule, list[Rule]], Rule]


def _keep_leaf(rule: Rule) -> Rule | None:
    return None


def _same_node(rule: CombinatorRule, kids: list[Rule]) -> Rule:
    """The node itself when no child changed (so unchanged trees stay shared), else a copy."""
    if all(new is old for new, old in zip(kids, rule.kids)):
        return rule
    return rule.with_kids(kids)


def rewrite(rule: Rule, leaf: LeafRewrite = _keep_leaf, node: NodeRewrite = _same_node) -> Rule:
    """`rule` with every leaf passed through `leaf` and every combinator, bottom up, through `node`."""
    if isinstance(rule, CombinatorRule):
        return node(rule, [rewrite(kid, leaf, node) for kid in rule.kids])
    return leaf(rule) or rule
