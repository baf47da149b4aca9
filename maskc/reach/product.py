"""The grid engine: exact reachability of neighbourhood and sliding-tile patterns, one axis at a time.

A grid window pattern relates query q to key k when, on every axis a, A_a(q_a, k_a) holds. Each
A_a is reflexive (every query lies in its own window: the clamped centre keeps it inside), so a
layer with its residual connection is the same product, and so is any composition of layers:
key k reaches query q within L layers exactly when, on every axis, k_a reaches q_a within L
layers of that axis's relation. The state is one S × S boolean matrix per axis instead of n × n
bits; a whole 128 × 128 image is 2 × 128² bits.

The engine applies when every layer pattern is one grid window rule on one canvas without text
tokens and the spec is not causal; otherwise the interval or bit-parallel engine runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskc.reach.stack import LayerStack
from maskc.rules import Canvas, GridWindowRule


class NotProductShapedError(ValueError):
    """The stack is not a product of per-axis relations on one grid."""


def _axis_matrix(rule: GridWindowRule, axis: int) -> np.ndarray:
    """A[q, k] for one axis: query coordinate q attends key coordinate k."""
    window = rule.axes[axis]
    q, k = np.arange(window.size)[:, None], np.arange(window.size)[None, :]
    return window.holds(q, k)


@dataclass(frozen=True)
class GridModel:
    """Per layer pattern, per axis, the reflexive relation A_a (which is already its residual form)."""

    canvas: Canvas
    axes: tuple[tuple[np.ndarray, ...], ...]

    @classmethod
    def build(cls, stack: LayerStack) -> GridModel:
        if stack.causal:
            raise NotProductShapedError("a causal spec")
        rules = [pattern.rule for pattern in stack.patterns]
        if not all(isinstance(rule, GridWindowRule) for rule in rules):
            raise NotProductShapedError("not every layer is one neighborhood or tiles pattern")
        grid_rules = [rule for rule in rules if isinstance(rule, GridWindowRule)]
        canvas = grid_rules[0].canvas
        if canvas.text or any(rule.canvas != canvas for rule in grid_rules):
            raise NotProductShapedError("text tokens, or layers on different grids")
        axes = tuple(tuple(_axis_matrix(rule, a) for a in range(canvas.ndim)) for rule in grid_rules)
        if not all(m.diagonal().all() for per_axis in axes for m in per_axis):
            raise NotProductShapedError("a query outside its own window")
        return cls(canvas, axes)

    def image(self, reached: np.ndarray, pattern: int) -> np.ndarray:
        """The exact set a reach set covers one layer later: ∃k on each axis in turn (the relation separates)."""
        canvas = self.canvas
        cube = np.zeros(canvas.shape, dtype=bool)
        cube[tuple(canvas.coords(np.arange(canvas.cells)))] = reached[: canvas.cells]
        for axis, relation in enumerate(self.axes[pattern]):
            moved = np.moveaxis(cube, axis, 0)
            flat = moved.reshape(moved.shape[0], -1).astype(np.int32)
            cube = np.moveaxis((relation.astype(np.int32) @ flat > 0).reshape(moved.shape), 0, axis)
        return cube[tuple(canvas.coords(np.arange(canvas.cells)))] | reached


class GridSearch:
    """Reach of every source at once: per axis, M[q, x] says coordinate x has reached coordinate q."""

    def __init__(self, model: GridModel) -> None:
        self.model = model
        self.reach = [np.eye(size, dtype=bool) for size in model.canvas.shape]
        self.recorded: tuple[int, int, np.ndarray] | None = None

    def apply(self, layer: int, pattern: int) -> bool:
        changed = False
        for axis, relation in enumerate(self.model.axes[pattern]):
            new = relation.astype(np.int32) @ self.reach[axis].astype(np.int32) > 0
            changed |= not np.array_equal(new, self.reach[axis])
            self.reach[axis] = new
        return changed

    def complete(self) -> bool:
        return all(m.all() for m in self.reach)

    def record(self, layer: int) -> None:
        """The first source (by position) that misses a query, and its reach set."""
        canvas = self.model.canvas
        coords = canvas.coords(np.arange(canvas.cells))
        short = np.zeros(canvas.cells, dtype=bool)
        for m, x in zip(self.reach, coords):
            short |= ~m.all(axis=0)[x]
        source = int(np.flatnonzero(short)[0])
        reached = np.ones(canvas.cells, dtype=bool)
        for m, x, xs in zip(self.reach, coords, canvas.coords(np.int64(source))):
            reached &= m[x, int(xs)]
        self.recorded = (layer, source, reached)
