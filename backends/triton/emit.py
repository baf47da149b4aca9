"""Triton expressions for element rules, dispatched on the rule's type.

Rules know nothing of Triton: each rule class has an emitter here that writes a Triton
expression over `em.q` ([BM, 1]) and `em.k` ([1, BN]) holding exactly where the rule does.
A third-party rule class adds its own with `@emit_rule.register`.
"""

from __future__ import annotations

import math
from functools import singledispatch

import numpy as np

from maskc.cluster_order import SortedClusterRule, order_keys
from maskc.errors import BackendError
from maskc.rules import (
    AxisWindow,
    BandRule,
    Canvas,
    ClusterRule,
    CombinatorRule,
    DifferenceRule,
    DocumentRule,
    EmptyRule,
    GridWindowRule,
    LabelRule,
    PerDocumentRule,
    RandomRule,
    Rule,
    SelectedBlocksRule,
    TokenSet,
    TokenSetRule,
    TopkRule,
)
from maskc.schedule.positioned import PositionedRule

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


#: A token list of at most this many runs of consecutive positions is tested by comparisons with
#: compile-time constants instead of a table: no load on a partial tile's path, which a global
#: token's list (one position, or a few) otherwise pays on every partial tile.
RUNS_AS_COMPARISONS = 4


def token_runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """The runs [first, last] of consecutive positions in a sorted list of distinct positions."""
    if len(positions) == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1)
    firsts = np.concatenate([positions[:1], positions[breaks + 1]])
    lasts = np.concatenate([positions[breaks], positions[-1:]])
    return [(int(a), int(b)) for a, b in zip(firsts, lasts, strict=True)]


def runs_expression(runs: list[tuple[int, int]], em: TritonEmitter, idx: str) -> str:
    """Whether `idx` lies in one of `runs`, by comparisons with compile-time constants."""
    terms = [
        f"({idx} == {em.constant(first, 'token')})"
        if first == last
        else f"(({idx} >= {em.constant(first, 'first')}) & ({idx} <= {em.constant(last, 'last')}))"
        for first, last in runs
    ]
    return f"({' | '.join(terms)})" if terms else f"({idx} < 0)"  # no member (positions are never negative)


def token_set_expression(tokens: TokenSet, em: TritonEmitter, idx: str) -> str:
    """Membership of `idx` in the token set."""
    if tokens.positions is not None and len(runs := token_runs(tokens.positions)) <= RUNS_AS_COMPARISONS:
        return runs_expression(runs, em, idx)
    if tokens.member is not None:
        table = em.table(tokens.member.astype(np.int32), "members")
        return f"(tl.load({table} + {idx}, mask={idx} < {em.runtime(tokens.n, 'n')}, other=0) != 0)"
    if tokens.positions is not None:  # past the table's n: the list's pages (memory grows with the list)
        page_bits, directory, words = tokens.pages()
        pages, bits = em.table(directory, "pages"), em.table(words, "bits")
        page = f"tl.load({pages} + ({idx} >> {page_bits}), mask={idx} < {em.runtime(tokens.n, 'n')}, other=-1)"
        in_page = f"(({idx} >> 5) & {(1 << (page_bits - 5)) - 1})"
        word = f"tl.load({bits} + ({page}) * {1 << (page_bits - 5)} + {in_page}, mask=({page}) >= 0, other=0)"
        return f"(((({word}) >> ({idx} & 31)) & 1) != 0)"
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


def _by_table(em: TritonEmitter, q_table: str, k_table: str, row: str, n: str) -> str:
    """q_table[row + q] == k_table[row + k], out-of-range positions never equal."""
    query = f"tl.load({q_table} + {row} + {em.q}, mask={em.q} < {n}, other=-1)"
    key = f"tl.load({k_table} + {row} + {em.k}, mask={em.k} < {n}, other=-2)"
    return f"({query} == {key})"


# Run-time leaves read tables each call supplies (`TritonEmitter.call_input`; `runtime.CallInputs`
# builds them under the same keys): per batch element (`em.batch`) or per table (`em.table_index`).


@emit_rule.register
def _cluster(rule: ClusterRule, em: TritonEmitter) -> str:
    q_labels = em.call_input(f"q_labels:{rule.origin}", "q_labels")
    k_labels = em.call_input(f"k_labels:{rule.origin}", "k_labels")
    n = em.runtime(rule.n, "n")
    return _by_table(em, q_labels, k_labels, f"{em.table_index}.to(tl.int64) * {n}", n)


def _same_document(em: TritonEmitter, n_value: int) -> str:
    labels, n = em.call_input("labels", "labels"), em.runtime(n_value, "n")
    return _by_table(em, labels, labels, f"{em.batch}.to(tl.int64) * {n}", n)


@emit_rule.register
def _document(rule: DocumentRule, em: TritonEmitter) -> str:
    return _same_document(em, rule.n)


@emit_rule.register
def _per_document(rule: PerDocumentRule, em: TritonEmitter) -> str:
    members, n = em.call_input(f"members:{rule.origin}", "members"), em.runtime(rule.n, "n")
    row = f"{em.batch}.to(tl.int64) * {n}"
    sides = [em.q, em.k] if rule.direction == "both" else [em.q if rule.direction == "rows" else em.k]
    held = " | ".join(f"(tl.load({members} + {row} + {x}, mask={x} < {n}, other=0) != 0)" for x in sides)
    return f"({_same_document(em, rule.n)} & ({held}))"


@emit_rule.register
def _topk(rule: TopkRule, em: TritonEmitter) -> str:
    """The call's selection: one (blocks × blocks) table per table index (batch · heads + head)."""
    table = em.call_input(f"selected:{rule.origin}", "selected")
    size, n = em.constant(rule.block, "block"), em.runtime(rule.n, "n")
    width = em.runtime(-(-rule.n // rule.block), "blocks")
    return _block_flags(f"({table} + {em.table_index}.to(tl.int64) * {width} * {width})", em, size, width, n)


@emit_rule.register
def _selected_blocks(rule: SelectedBlocksRule, em: TritonEmitter) -> str:
    table = em.table(rule.selected.astype(np.int32).reshape(-1), "selected")
    size, width = em.constant(rule.block, "block"), em.runtime(rule.selected.shape[1], "blocks")
    n = em.runtime(rule.n, "n")
    return _block_flags(table, em, size, width, n)


def _block_flags(table: str, em: TritonEmitter, size: str, width: str, n: str) -> str:
    """table[(q // size) · width + k // size] != 0.

    Read per element, a 64 × 64 tile gathers 4,096 flags, and the 64-bit pointer of each took so many
    registers that the forward spilled (sm_90, bench/NOTES.md). A tile of the kernels whose extents
    divide the block size lies in one block pair, so there the flag at its first positions is read
    once; the choice is made at compile time (the tile's extents are constants). Positions past n:
    False per element by the load's mask; in the one-read form the tile's flag, which the
    predicate's own bounds term (n_ctx, the rule's n) clears.
    """
    # 64-bit offsets: a selection of W × W blocks passes 2**31 entries at W = 46,341
    per_element = f"({em.q} // {size}).to(tl.int64) * {width} + {em.k} // {size}"
    gathered = f"(tl.load({table} + {per_element}, mask=({em.q} < {n}) & ({em.k} < {n}), other=0) != 0)"
    if em.tile is None:
        return gathered
    q_first, k_first, aligned = em.tile
    at = f"({q_first} // {size}).to(tl.int64) * {width} + {k_first} // {size}"
    once = f"(tl.load({table} + {at}, mask=({q_first} < {n}) & ({k_first} < {n}), other=0) != 0)"
    # the extents as products of the shape (Gluon's tensors, kernels/forward_ws.py, have no `numel`)
    extent_q, extent_k = (f"({x}.shape[0] * {x}.shape[1])" for x in (em.q, em.k))
    one_pair = f"{aligned} and {size} % {extent_q} == 0 and {size} % {extent_k} == 0"
    return f"({once} if {one_pair} else {gathered})"


@emit_rule.register
def _labels(rule: LabelRule, em: TritonEmitter) -> str:
    ql, kl = em.table(rule.q_labels, "q_labels"), em.table(rule.k_labels, "k_labels")
    n = em.runtime(len(rule.q_labels), "n")
    query = f"tl.load({ql} + {em.q}, mask={em.q} < {n}, other=-1)"
    key = f"tl.load({kl} + {em.k}, mask={em.k} < {n}, other=-2)"
    return f"({query} == {key})"


def _unravel(em: TritonEmitter, idx: str, shape: tuple[int, ...]) -> list[str]:
    """Row-major coordinates of flat index expression `idx` (each taken modulo its axis, so in range)."""
    out = []
    for axis, size in enumerate(shape):
        stride = math.prod(shape[axis + 1 :])
        term = idx if stride == 1 else f"({idx} // {em.constant(stride, 'stride')})"
        out.append(f"({term} % {em.constant(size, 'size')})")
    return out


def canvas_coordinates(canvas: Canvas, em: TritonEmitter, idx: str) -> list[str]:
    """The grid coordinates of position expression `idx` in the canvas's storage order."""
    if canvas.tiles is None:
        return _unravel(em, idx, canvas.shape)
    volume = em.constant(math.prod(canvas.tiles), "tile_volume")
    counts = tuple(s // t for s, t in zip(canvas.shape, canvas.tiles))
    outer = _unravel(em, f"({idx} // {volume})", counts)
    inner = _unravel(em, f"({idx} % {volume})", canvas.tiles)
    return [f"({o} * {em.constant(t, 'tile')} + {i})" for o, t, i in zip(outer, canvas.tiles, inner)]


def axis_window_expression(window: AxisWindow, em: TritonEmitter, q: str, k: str) -> str:
    """lo[q] ≤ k ≤ hi[q] (and k ≡ q mod step), with lo and hi as lookup tables indexed by the query."""
    lo, hi = em.table(window.lo, "lo"), em.table(window.hi, "hi")
    term = f"(({k}) >= tl.load({lo} + {q})) & (({k}) <= tl.load({hi} + {q}))"
    if window.step > 1:
        term += f" & ((({k}) - ({q})) % {em.constant(window.step, 'step')} == 0)"
    return term


@emit_rule.register
def _grid_window(rule: GridWindowRule, em: TritonEmitter) -> str:
    cells = em.constant(rule.canvas.cells, "cells")
    q_coords = canvas_coordinates(rule.canvas, em, em.q)
    k_coords = canvas_coordinates(rule.canvas, em, em.k)
    terms = [f"({em.q} < {cells}) & ({em.k} < {cells})"]
    terms += [axis_window_expression(w, em, q, k) for w, q, k in zip(rule.axes, q_coords, k_coords)]
    return " & ".join(f"({t})" for t in terms)


@emit_rule.register
def _combinator(rule: CombinatorRule, em: TritonEmitter) -> str:
    return "(" + f" {rule.symbol} ".join(f"({emit_rule(kid, em)})" for kid in rule.kids) + ")"


@emit_rule.register
def _difference(rule: DifferenceRule, em: TritonEmitter) -> str:
    keep, drop = (emit_rule(kid, em) for kid in rule.kids)
    return f"(({keep}) & ~({drop}))"


@emit_rule.register
def _positioned(rule: PositionedRule, em: TritonEmitter) -> str:
    """The pass's rule on original positions, read from the pass's position tables (−1: padding)."""
    size = em.runtime(rule.size, "size")
    q_table, k_table = em.table(rule.q_positions, "q_pos"), em.table(rule.k_positions, "k_pos")
    q = f"tl.load({q_table} + {em.q}, mask={em.q} < {size}, other=-1)"
    k = f"tl.load({k_table} + {em.k}, mask={em.k} < {size}, other=-1)"
    inner = em.remapped(f"tl.maximum({q}, 0)", f"tl.maximum({k}, 0)")
    return f"(({q} >= 0) & ({k} >= 0) & ({emit_rule(rule.inner, inner)}))"


@emit_rule.register
def _sorted_cluster(rule: SortedClusterRule, em: TritonEmitter) -> str:
    """The rule at the original positions of sorted row and column, read from the call's order tables
    (one row of n per table index: batch · heads + head); positions past n hold nothing."""
    q_key, k_key = order_keys(rule.leaf)
    q_order, k_order = em.call_input(q_key, "q_order"), em.call_input(k_key, "k_order")
    n = em.runtime(rule.n, "n")
    row = f"{em.table_index}.to(tl.int64) * {n}"
    q = f"tl.load({q_order} + {row} + {em.q}, mask={em.q} < {n}, other=-1)"
    k = f"tl.load({k_order} + {row} + {em.k}, mask={em.k} < {n}, other=-1)"
    inner = em.remapped(f"tl.maximum({q}, 0)", f"tl.maximum({k}, 0)")
    return f"(({q} >= 0) & ({k} >= 0) & ({emit_rule(rule.inner, inner)}))"
