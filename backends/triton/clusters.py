"""Cluster patterns run as segments: positions sorted by cluster, attention inside, outputs scattered back.

A pattern bounded by one cluster leaf (`maskc.cluster_order.sorting_leaf`: every pair shares a
cluster, e.g. `causal: true` over `cluster`) runs on q, k and v gathered in cluster order, per batch
element and head: each cluster is a contiguous segment, so its tiles lie on the diagonal and the
tile tables built on the device (`runtime.py`, `cluster_order.sorted_kinds`) hold only tiles
inside segments. The predicate (`SortedClusterRule`) evaluates the original rule on original
positions, so the mask is exactly the token-order one. Assignment (`nearest.py`), stable sort and
the row permutations (`rows.py`: q, k and v into cluster order, the output back, each one copy of
the rows, whose gradient is the inverse permutation) run on the device; nothing is read back to the
host. Gradients reach q, k and v through the permutations, not through the assignment.

With grouped-query attention the keys of each query head are sorted by that head's key labels, so
keys and values are expanded to the query heads first (their gradients sum back through the
expansion).
"""

from __future__ import annotations

import weakref

import torch

from maskc.cluster_order import SortedClusterRule, cluster_order, label_keys, order_keys, sorting_leaf
from maskc.errors import BackendError
from maskc.ir import CompiledPattern
from maskc.ir.build import build_layout
from maskc.rules import ClusterRule

from .function import sparse_attention
from .plans import DERIVED, DERIVED_SEPARATOR, plan_for, traced_key
from .rows import inverse_order, permuted
from .runtime import CallInputs

#: The name the sorted pattern's spec hash carries after the separator (`plans.DERIVED`).
CLUSTER_ORDER = "cluster-order"

_SORTED: weakref.WeakKeyDictionary[CompiledPattern, CompiledPattern] = weakref.WeakKeyDictionary()
_IN_CLUSTER_ORDER: weakref.WeakKeyDictionary[CompiledPattern, bool] = weakref.WeakKeyDictionary()


def runs_in_cluster_order(pattern: CompiledPattern) -> bool:
    """Whether the pattern runs as cluster segments (one cluster leaf bounds every head's rule):
    a property of its rules, answered once per pattern (every call asks)."""
    if pattern not in _IN_CLUSTER_ORDER:
        _IN_CLUSTER_ORDER[pattern] = pattern.dynamic and sorting_leaf(pattern) is not None
    return _IN_CLUSTER_ORDER[pattern]


def _sorting_leaf(pattern: CompiledPattern) -> ClusterRule:
    leaf = sorting_leaf(pattern)
    if leaf is None:
        raise BackendError(f"pattern {pattern.spec.name!r} is not bounded by one cluster leaf: it runs in token order")
    return leaf


def sorted_pattern(pattern: CompiledPattern) -> CompiledPattern:
    """The pattern on the sorted grid: each layout's rule in the order of the sorting leaf (kept while
    `pattern` lives, so its plan and kernels are built once)."""
    if pattern not in _SORTED:
        leaf = _sorting_leaf(pattern)
        layouts = tuple(
            build_layout(SortedClusterRule(layout.rule, leaf, pattern.n), layout.grid) for layout in pattern.layouts
        )
        _SORTED[pattern] = CompiledPattern(
            spec=pattern.spec,
            spec_hash=f"{pattern.spec_hash}{DERIVED_SEPARATOR}{CLUSTER_ORDER}",
            n=pattern.n,
            block_m=pattern.block_m,
            block_n=pattern.block_n,
            heads=pattern.heads,
            layouts=layouts,
            head_layout=pattern.head_layout.copy(),
        )
    return _SORTED[pattern]


DERIVED[CLUSTER_ORDER] = sorted_pattern


def _sorted_plan_key(pattern: CompiledPattern) -> str:
    """The plan key of the sorted pattern; a traced call records its traced key, read off the pattern's
    attributes (`plans.plan_by_key` derives the sorted pattern again from the cached one)."""
    if torch.compiler.is_compiling():
        return traced_key(pattern, CLUSTER_ORDER)
    return plan_for(sorted_pattern(pattern)).key


def cluster_inputs(
    pattern: CompiledPattern,
    q: torch.Tensor,
    k: torch.Tensor,
    documents: torch.Tensor | None,
    centroids: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """The call's run-time tensors of the sorted pattern: labels on original positions (as in token
    order), documents and other leaves' tables, and the stable orders by the sorting leaf's labels."""
    leaf = _sorting_leaf(pattern)
    # the sorted rules hold the same leaves: the pattern's own rules name the same inputs
    values = CallInputs.prepare([layout.rule for layout in pattern.layouts], q, k, documents, centroids).values
    # both sides in one sort (a call builds these every time, and each op costs host time)
    orders = cluster_order(torch.stack([values[key] for key in label_keys(leaf)])).to(torch.int32)
    for key, order in zip(order_keys(leaf), orders.unbind(0)):
        values[key] = order  # a contiguous half of `orders`
    return values


def cluster_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: CompiledPattern,
    scale: float,
    documents: torch.Tensor | None = None,
    centroids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of a cluster-bounded pattern, computed in cluster order and returned in token order."""
    leaf = _sorting_leaf(pattern)
    values = cluster_inputs(pattern, q, k, documents, centroids)
    q_order, k_order = (values[key] for key in order_keys(leaf))
    q_inverse, k_inverse = inverse_order(torch.stack([q_order, k_order])).unbind(0)
    group = q.shape[1] // k.shape[1]
    keys, vals = (x.repeat_interleave(group, dim=1) if group > 1 else x for x in (k, v))
    out, lse = sparse_attention(
        permuted(q, q_order, q_inverse),
        permuted(keys, k_order, k_inverse),
        permuted(vals, k_order, k_inverse),
        pattern,
        scale,
        run_time=[values[key] for key in sorted(values)],
        plan_key=_sorted_plan_key(pattern),
    )
    return permuted(out, q_inverse, q_order), lse.gather(-1, q_inverse.long())
