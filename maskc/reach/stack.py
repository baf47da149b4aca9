"""The model a reachability question is asked about: n tokens and a cycled schedule of layer patterns.

Each distinct layer pattern is the union of its heads' rules (information moves through a layer
if any head carries it), with dynamic leaves replaced by their static lower bound: an edge that
run time may or may not create is left out, so whatever is proven holds for every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskc import limits
from maskc.compiler import as_spec, compile
from maskc.documents import document_ids, uses_documents
from maskc.errors import DocumentsError, MaskcError, TooLargeError
from maskc.grid import ragged_ranges
from maskc.ir import BlockLayout, CompiledPattern
from maskc.ir.build import build_layout
from maskc.origin import named
from maskc.rules import Rule, UnionRule
from maskc.spec import Spec


@dataclass(frozen=True)
class LayerPattern:
    """One distinct layer: the union of its heads' static rules, laid out on the tile grid."""

    rule: Rule
    layout: BlockLayout

    def row(self, i: int) -> np.ndarray:
        """Sorted keys that query i attends (exact; cost grows with the stored tiles of its row)."""
        grid = self.layout.grid
        r = i // grid.block_m
        a, b = self.layout.row_ptr[r], self.layout.row_ptr[r + 1]
        cols = self.layout.col_idx[a:b].astype(np.int64)
        keys = ragged_ranges(grid.col_first(cols), grid.col_last(cols))[1]
        return keys[self.rule.mask(np.full(len(keys), i), keys)]


@dataclass(frozen=True)
class LayerStack:
    """n tokens, the distinct layer patterns, and one cycle of the schedule as (count, pattern) runs."""

    name: str
    n: int
    causal: bool
    patterns: tuple[LayerPattern, ...]
    runs: tuple[tuple[int, int], ...]
    #: Origins of the dynamic (run-time) leaves whose edges were left out.
    dynamic: tuple[str, ...]
    #: With documents: per position, the first and last position of its document; every key must
    #: then reach the queries of its own document only.
    document_bounds: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def period(self) -> int:
        """Layers in one cycle of the schedule."""
        return sum(count for count, _ in self.runs)

    def pattern_at(self, layer: int) -> int:
        """Index of the pattern used by layer `layer` (1-based; the schedule cycles)."""
        position = (layer - 1) % self.period
        for count, index in self.runs:
            if position < count:
                return index
            position -= count
        raise AssertionError("unreachable: position is below the period")

    def layer_runs(self, start: int = 1) -> Iterator[tuple[int, int, int]]:
        """(first layer, count, pattern) for consecutive runs from layer `start` on, forever."""
        layer, position = start, (start - 1) % self.period
        while True:
            for count, index in self.runs:
                if position >= count:
                    position -= count
                    continue
                yield layer, count - position, index
                layer += count - position
                position = 0

    def targets(self, j: int) -> tuple[int, int]:
        """The queries source j must reach: (first, last) inclusive."""
        lo, hi = (j, self.n - 1) if self.causal else (0, self.n - 1)
        if self.document_bounds is None:
            return lo, hi
        first, last = self.document_bounds
        return max(lo, int(first[j])), min(hi, int(last[j]))

    def check_position(self, value: int, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < self.n:
            raise MaskcError(f"{what} must be a position in 0 … {self.n - 1} (seq_len {self.n}), got {value!r}")
        return int(value)


def _dynamic_origins(pattern: CompiledPattern) -> list[str]:
    return [str(leaf.origin) for layout in pattern.layouts for leaf in layout.rule.leaves() if leaf.dynamic]


def _layer_pattern(pattern: CompiledPattern) -> LayerPattern:
    """The union of a compiled pattern's heads, static; reuses the compiled layout when it already is that."""
    rules = [layout.rule.static_bound(lower=True) for layout in pattern.layouts]
    if len(rules) == 1 and not pattern.dynamic:
        return LayerPattern(rules[0], pattern.layouts[0])
    rule = rules[0] if len(rules) == 1 else UnionRule(rules, origin=named("heads"))
    return LayerPattern(rule, build_layout(rule, pattern.grid))


#: Largest tile side for a recurrent layer's layout (one partial tile is evaluated element by element).
_RECURRENT_TILE_LIMIT = 1024


def _recurrent_tile(n: object, block_size: int | tuple[int, int] | None) -> int | tuple[int, int] | None:
    """Tiles for a recurrent layer (the relation j ≤ i): up to 1024 a side, about 256 tiles a side.

    Its full tiles need no element work and its partial (diagonal) tiles are all alike, so large
    tiles keep the layout small at any n, with the same exact relation. A bad n is left to compile.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return block_size
    side = min(_RECURRENT_TILE_LIMIT, 1 << max(0, (n - 1).bit_length() - 8))
    default = max(block_size) if isinstance(block_size, tuple) else (block_size or 0)
    return side if side > max(default, 64) else block_size


def _compile_schedule(
    spec: Spec, seq_len: int | None, block_size: int | tuple[int, int] | None
) -> list[tuple[int, CompiledPattern]]:
    """(count, compiled pattern) per schedule entry, as `compile_layers`, recurrent layers on large tiles."""
    n = spec.seq_len if seq_len is None else seq_len
    return [
        (
            count,
            compile(
                layer,
                seq_len=seq_len,
                block_size=_recurrent_tile(n, block_size) if mixer == "recurrent" else block_size,
            ),
        )
        for (count, layer), mixer in zip(spec.layer_schedule(), spec.layer_mixers())
    ]


def _with_documents(
    spec: Spec, entries: list[tuple[int, CompiledPattern]], documents: Any
) -> list[tuple[int, CompiledPattern]]:
    """The schedule with every layer that depends on documents resolved to them (an error when none does)."""
    if not any(uses_documents(pattern) for _, pattern in entries):
        raise DocumentsError(f"documents were given, but no layer of {spec.name!r} depends on documents")
    return [
        (count, compile(p.spec, seq_len=p.n, block_size=(p.block_m, p.block_n), documents=documents))
        if uses_documents(p)
        else (count, p)
        for count, p in entries
    ]


def build_stack(
    subject: Spec | str | Path | CompiledPattern,
    seq_len: int | None = None,
    block_size: int | tuple[int, int] | None = None,
    documents: Any = None,
) -> LayerStack:
    """The layer model of a spec (its layer schedule) or of one compiled pattern used at every layer."""
    if isinstance(subject, CompiledPattern):
        if documents is not None:
            raise MaskcError("documents go to maskc.compile(..., documents=ids) when verifying a compiled pattern")
        if seq_len is not None and seq_len != subject.n:
            raise MaskcError(f"the compiled pattern is for seq_len {subject.n}; got seq_len={seq_len}")
        entries, spec = [(1, subject)], subject.spec
    else:
        spec = as_spec(subject)
        entries = _compile_schedule(spec, seq_len, block_size)
        if documents is not None:
            entries = _with_documents(spec, entries, documents)
    n = entries[0][1].n
    if n > limits.MAX_REACH_SEQ_LEN:
        raise TooLargeError(f"proving reach at n = {n}: " + limits.exceeds("n", n, "MAX_REACH_SEQ_LEN"))
    layers: dict[int, LayerPattern] = {}
    runs, dynamic = [], []
    for count, pattern in entries:
        if id(pattern) not in layers:
            layers[id(pattern)] = _layer_pattern(pattern)
            dynamic += [o for o in _dynamic_origins(pattern) if o not in dynamic]
        runs.append((count, list(layers).index(id(pattern))))
    patterns = tuple(layers.values())
    bounds = None if documents is None else _document_bounds(document_ids(documents, n))
    return LayerStack(spec.name, n, spec.causal, patterns, tuple(runs), tuple(dynamic), bounds)


def _document_bounds(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position, the first and the last position of its document (ids non-decreasing)."""
    first = np.searchsorted(ids, ids, side="left")
    last = np.searchsorted(ids, ids, side="right") - 1
    return first.astype(np.int64), last.astype(np.int64)
