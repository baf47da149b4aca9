"""Triton expressions for element rules, dispatched on the rule's type.

Rules know nothing of Triton: each rule class has an emitter here that writes a Triton
expression over `em.q` ([BM, 1]) and `em.k` ([1, BN]) holding exactly where the rule does.
A third-party rule class adds its own with `@emit_rule.register`.
"""

from __future__ import annotations

from functools import singledispatch

import numpy as np

from maskc.errors import BackendError
from maskc.rules import (
    BandRule,
    ClusterRule,
    CombinatorRule,
    DifferenceRule,
    EmptyRule,
    LabelRule,
    RandomRule,
    Rule,
    TokenSet,
    TokenSetRule,
)

from .emitter import TritonEmitter


@singledispatch
def emit_rule(rule: Rule, em: TritonEmitter) -> str:
    """A Triton expression over `em.q` and `em.k` that is `rule`."""
    raise BackendError(
        f"{rule.origin or 'a rule'} ({type(rule).__name__}) has no Triton emitter; "
        "register one with maskc.backends.triton.emit.emit_rule.register"
    )


@emit_rule.register
def _empty(rule: EmptyRule, em: TritonEmitter) -> str:
    return f"(({em.q} < 0) & ({em.k} < 0))"


@emit_rule.register
def _band(rule: BandRule, em: TritonEmitter) -> str:
    if rule.unit == 1:
        d = f"({em.k} - {em.q})"
    else:
        g = em.constant(rule.unit, "unit")
        d = f"({em.k} // {g} - {em.q} // {g})"
    terms = []
    if rule.lo is not None:
        terms.append(f"({d} >= {em.constant(rule.lo, 'lo')})")
    if rule.hi is not None:
        terms.append(f"({d} <= {em.constant(rule.hi, 'hi')})")
    if rule.step > 1:
        terms.append(f"({d} % {em.constant(rule.step, 'step')} == 0)")
    return " & ".join(terms) if terms else f"(({em.q} >= 0) & ({em.k} >= 0))"


def token_set_expression(tokens: TokenSet, em: TritonEmitter, idx: str) -> str:
    """Membership of `idx` in the token set."""
    if tokens.member is not None:
        table = em.table(tokens.member.astype(np.int32), "members")
        return f"(tl.load({table} + {idx}, mask={idx} < {em.runtime(tokens.n, 'n')}, other=0) != 0)"
    if tokens.first is not None:
        return f"({idx} < {em.constant(tokens.first, 'first')})"
    return f"({idx} % {em.constant(tokens.every, 'every')} == {em.constant(tokens.offset, 'offset')})"


@emit_rule.register
def _token_set(rule: TokenSetRule, em: TritonEmitter) -> str:
    return token_set_expression(rule.tokens, em, em.q if rule.axis == "rows" else em.k)


@emit_rule.register
def _random(rule: RandomRule, em: TritonEmitter) -> str:
    table = em.table(rule.table, "random")
    per_row = rule.table.shape[1]
    if rule.unit == 1:
        q, k = em.q, em.k
    else:
        unit = em.constant(rule.unit, "unit")
        q, k = f"({em.q} // {unit})", f"({em.k} // {unit})"
    rows = em.runtime(len(rule.table), "units")
    hits = [f"(tl.load({table} + {q} * {per_row} + {t}, mask={q} < {rows}, other=-1) == {k})" for t in range(per_row)]
    return "(" + " | ".join(hits) + ")"


@emit_rule.register
def _cluster(rule: ClusterRule, em: TritonEmitter) -> str:
    raise rule.deferred_error()


@emit_rule.register
def _labels(rule: LabelRule, em: TritonEmitter) -> str:
    ql, kl = em.table(rule.q_labels, "q_labels"), em.table(rule.k_labels, "k_labels")
    n = em.runtime(len(rule.q_labels), "n")
    query = f"tl.load({ql} + {em.q}, mask={em.q} < {n}, other=-1)"
    key = f"tl.load({kl} + {em.k}, mask={em.k} < {n}, other=-2)"
    return f"({query} == {key})"


@emit_rule.register
def _combinator(rule: CombinatorRule, em: TritonEmitter) -> str:
    return "(" + f" {rule.symbol} ".join(f"({emit_rule(kid, em)})" for kid in rule.kids) + ")"


@emit_rule.register
def _difference(rule: DifferenceRule, em: TritonEmitter) -> str:
    keep, drop = (emit_rule(kid, em) for kid in rule.kids)
    return f"(({keep}) & ~({drop}))"
