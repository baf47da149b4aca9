"""Shortest witness paths: how key j's information reaches query i, layer by layer.

Forward, the exact reach sets S_0 = {j}, S_1, … of j are computed until S_L contains i: L is
then the fewest layers that connect them. Backward, every position p in S_l has a predecessor
in S_(l−1) (itself, by the residual, or a key it attends): that is what S_l means. Keeping a few
such predecessors per layer gives a small layered graph (networkx) that holds at least one path
from (0, j) to (L, i); its shortest path is the witness, valid at every layer by construction.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from maskc.reach.sets import RunSet
from maskc.reach.stack import LayerStack

if TYPE_CHECKING:
    import networkx as nx

#: Predecessors kept per position and positions kept per layer while walking back.
BRANCH = 2
WIDTH = 8

Image = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class Witness:
    """positions[l] holds j's information after layer l; positions[0] = j, positions[-1] = i."""

    stack: LayerStack
    positions: tuple[int, ...]
    graph: nx.DiGraph

    @property
    def layers(self) -> int:
        return len(self.positions) - 1

    def lines(self) -> list[str]:
        """The path layer by layer; consecutive layers where the position stays are folded into one line."""
        p = self.positions
        out = [f"key {p[0]} reaches query {p[-1]} in {self.layers} layer{'s' if self.layers != 1 else ''}:"]
        out.append(f"  start       position {p[0]}")
        layer = 1
        while layer <= self.layers:
            if p[layer] != p[layer - 1]:
                rule = self.stack.patterns[self.stack.pattern_at(layer)].rule.describe()
                out.append(f"  layer {layer:<5} {p[layer]} attends {p[layer - 1]}   by {rule}")
                layer += 1
                continue
            end = layer
            while end + 1 <= self.layers and p[end + 1] == p[layer]:
                end += 1
            span = f"{layer}" if end == layer else f"{layer}-{end}"
            out.append(f"  layer {span:<5} {p[layer]} keeps it (residual)")
            layer = end + 1
        return out


def forward_sets(
    stack: LayerStack, image: Image, i: int, j: int, max_layers: int | None
) -> tuple[int, list[int], list[RunSet]] | None:
    """(layers to reach i, layers at which the set changed, the set from each of those on), or None."""
    reached = np.zeros(stack.n, dtype=bool)
    reached[j] = True
    changed_at, sets = [0], [RunSet(reached)]
    if i == j:
        return 0, changed_at, sets
    last_change = 0
    for first, count, pattern in stack.layer_runs():
        for layer in range(first, first + count):
            if max_layers is not None and layer > max_layers:
                return None
            new = image(reached, pattern)
            if np.array_equal(new, reached):
                break
            reached, last_change = new, layer
            changed_at.append(layer)
            sets.append(RunSet(reached))
            if reached[i]:
                return layer, changed_at, sets
        if first + count - 1 - last_change >= stack.period:
            return None
    raise AssertionError("unreachable: layer_runs never ends")


def witness_path(stack: LayerStack, image: Image, i: int, j: int, max_layers: int | None = None) -> Witness | None:
    """A shortest path from key j to query i (at most `max_layers` layers), or None when there is none."""
    i, j = stack.check_position(i, "query i"), stack.check_position(j, "key j")
    found = forward_sets(stack, image, i, j, max_layers)
    if found is None:
        return None
    total, changed_at, sets = found
    import networkx as nx  # imported here: only witness paths need it, and it is slow to import

    graph = nx.DiGraph()
    graph.add_node((total, i))
    frontier = np.array([i])
    for layer in range(total, 0, -1):
        before = sets[bisect_right(changed_at, layer - 1) - 1]
        rule = stack.patterns[stack.pattern_at(layer)]
        kept = []
        for p in frontier:
            preds = [int(p)] if before.contains(np.array([p]))[0] else []
            if not preds:
                keys = rule.row(int(p))
                keys = keys[before.contains(keys)]
                preds = keys[np.argsort(np.abs(keys - j), kind="stable")][:BRANCH].tolist()
            for k in preds:
                graph.add_edge((layer - 1, k), (layer, int(p)), kind="residual" if k == p else "attends")
            kept += preds
        frontier = np.unique(kept)[:WIDTH]
    path = nx.shortest_path(graph, (0, j), (total, i))
    return Witness(stack, tuple(p for _, p in path), graph)
