"""spec → IR: lower each distinct head pattern to a rule, lay it out on the tile grid, cache."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from maskc import limits
from maskc.documents import document_ids, uses_documents
from maskc.errors import ArgumentError, DocumentsError, MaskcWarning, SpecError
from maskc.grid import TileGrid
from maskc.ir import CompiledPattern
from maskc.ir.build import build_layout
from maskc.loader import load, locate
from maskc.lowering import lower_pattern, pattern_path
from maskc.schedule import SCHEDULE_MODES
from maskc.spec import MAX_SEQ_LEN, Spec

#: Smallest tile side a kernel can use (matrix units work on 16 × 16 fragments).
MIN_TILE = 16
_CACHE: OrderedDict[tuple[Any, ...], CompiledPattern] = OrderedDict()
_CACHE_SIZE = 32


def cached_patterns() -> list[CompiledPattern]:
    """The compiled patterns the cache holds now, newest last."""
    return list(_CACHE.values())


def cached_pattern(spec_hash: str, n: int, block_m: int, block_n: int, heads: int) -> CompiledPattern | None:
    """A cached static pattern compiled from the spec with this hash at this size, if the cache holds one.

    A backend whose calls are traced (torch.compile) records these values, which the trace reads
    off the pattern, and finds the pattern again here when the graph runs (patterns for fixed
    documents are never cached: a traced call passes its documents at run time).
    """
    for pattern in _CACHE.values():
        shape = (pattern.spec_hash, pattern.n, pattern.block_m, pattern.block_n, pattern.heads)
        if shape == (spec_hash, n, block_m, block_n, heads):
            return pattern
    return None


def clear_cache() -> None:
    """Forget every compiled pattern (benchmarks use it to time fresh compiles)."""
    _CACHE.clear()


def as_spec(spec_or_path: Spec | str | Path) -> Spec:
    if isinstance(spec_or_path, Spec):
        return spec_or_path
    if isinstance(spec_or_path, (str, Path)):
        return load(spec_or_path)
    raise TypeError(f"expected a Spec or a path to a spec file, got {type(spec_or_path).__name__}")


def _seq_len(spec: Spec, seq_len: int | None) -> int:
    n = spec.seq_len if seq_len is None else seq_len
    if n is None:
        raise SpecError(
            "no sequence length: set seq_len in the spec, or pass --seq-len N (seq_len=N in Python)", path="seq_len"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= MAX_SEQ_LEN:
        message = (
            f"seq_len must be a whole number in 1 … {MAX_SEQ_LEN} (maskc.limits.MAX_SEQ_LEN), got {limits.shown(n)}"
        )
        raise ArgumentError(message, argument="seq_len")
    if spec.grid is not None and n != spec.grid.tokens:
        raise SpecError(f"seq_len {n} conflicts with the grid, which holds {spec.grid.tokens} tokens", path="grid")
    return int(n)


def tile_shape(spec: Spec, block_size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): the spec's block size unless given; powers of two, at least 16."""
    if block_size is None:
        side = max(spec.block_size, MIN_TILE)
        return side, side
    shape = (block_size, block_size) if isinstance(block_size, (int, np.integer)) else tuple(block_size)
    if len(shape) != 2:
        raise ArgumentError(
            f"block_size is one size or a pair (BLOCK_M, BLOCK_N), got {limits.shown(block_size)}",
            argument="block_size",
        )
    for side in shape:
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < MIN_TILE or side & (side - 1):
            raise ArgumentError(
                f"tile sides must be powers of two, at least {MIN_TILE}; got {limits.shown(block_size)}",
                argument="block_size",
            )
        if side > limits.MAX_TILE_SIDE:
            raise ArgumentError(limits.exceeds("the tile side", int(side), "MAX_TILE_SIDE"), argument="block_size")
    return int(shape[0]), int(shape[1])


def _heads(spec: Spec, heads: int | None) -> int:
    if heads is None:
        return spec.heads or 1
    if isinstance(heads, bool) or not isinstance(heads, (int, np.integer)) or heads < 1:
        raise ArgumentError(f"heads must be a positive whole number, got {limits.shown(heads)}", argument="heads")
    if heads > limits.MAX_HEADS:
        raise ArgumentError(limits.exceeds("heads", int(heads), "MAX_HEADS"), argument="heads")
    if spec.head_patterns and spec.heads is not None and heads != spec.heads:
        raise ArgumentError(
            f"the spec has per-head patterns for {spec.heads} heads; got heads={heads}", argument="heads"
        )
    return int(heads)


def _warn_empty_rows(pattern: CompiledPattern) -> None:
    if pattern.dynamic:
        return
    for k, layout in enumerate(pattern.layouts):
        empty = layout.empty_rows()
        if len(empty):
            heads = np.flatnonzero(pattern.head_layout == k).tolist()
            shown = ", ".join(map(str, empty[:8].tolist())) + (", …" if len(empty) > 8 else "")
            warnings.warn(
                f"{pattern.spec.name}: {len(empty)} query row(s) attend no key (heads {heads}): {shown}; "
                "backends output zeros there",
                MaskcWarning,
                stacklevel=3,
            )


def compile(
    spec_or_path: Spec | str | Path,
    seq_len: int | None = None,
    block_size: int | tuple[int, int] | None = None,
    heads: int | None = None,
    device: Any = None,
    schedule: str = "single",
    documents: Any = None,
) -> CompiledPattern:
    """Compile a spec (or spec file) to the block-sparse IR, cached by (spec, n, tile, heads, device).

    `schedule` says how backends run it: "single", one pass in token order; "auto", the passes
    `maskc.schedule` picks by predicted kernel work (planned on first use); "split", every lowering
    taken whatever its cost. The mask is the same whatever the schedule.

    `documents` (one integer id per position, non-decreasing) fixes the documents of a pattern
    with `document` leaves, so that the result is static; without them those leaves are resolved
    at call time (`maskc.attention(..., documents=ids)`).
    """
    spec = as_spec(spec_or_path)
    if schedule not in SCHEDULE_MODES:
        raise ArgumentError(
            f"schedule must be one of {', '.join(SCHEDULE_MODES)}; got {schedule!r}", argument="schedule"
        )
    try:
        if documents is not None:
            return _compile_with_documents(spec, seq_len, block_size, heads, device, schedule, documents)
        return _compile(spec, seq_len, block_size, heads, device, schedule)
    except SpecError as err:
        if isinstance(spec_or_path, (str, Path)):
            raise locate(err, spec_or_path) from None
        raise


def _compile_with_documents(
    spec: Spec,
    seq_len: int | None,
    block_size: int | tuple[int, int] | None,
    heads: int | None,
    device: Any,
    schedule: str,
    documents: Any,
) -> CompiledPattern:
    """The pattern with its document leaves resolved to `documents`; an error when it has none."""
    if not uses_documents(_compile(spec, seq_len, block_size, heads, None, "single")):
        raise DocumentsError(
            f"documents were given, but pattern {spec.name!r} has no document-dependent part "
            "(document, or sink/global with per: document)"
        )
    ids = document_ids(documents, _seq_len(spec, seq_len))
    return _compile(spec, seq_len, block_size, heads, device, schedule, ids)


def _compile(
    spec: Spec,
    seq_len: int | None,
    block_size: int | tuple[int, int] | None,
    heads: int | None,
    device: Any,
    schedule: str,
    documents: np.ndarray | None = None,
) -> CompiledPattern:
    n = _seq_len(spec, seq_len)
    bm, bn = tile_shape(spec, block_size)
    h = _heads(spec, heads)
    key = (
        spec.content_hash(),
        spec.name,
        spec.description,
        n,
        bm,
        bn,
        h,
        None if device is None else str(device),
        schedule,
    )
    # patterns for fixed documents are built each time: a training loop's batches would flush the cache
    cached = documents is None
    if cached and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    grid = TileGrid(n, bm, bn)
    patterns, index = spec.distinct_head_patterns(h)
    layouts = tuple(
        build_layout(lower_pattern(spec, node, n, pattern_path(spec, node), documents), grid) for node in patterns
    )
    pattern = CompiledPattern(
        spec=spec,
        spec_hash=spec.content_hash(),
        n=n,
        block_m=bm,
        block_n=bn,
        heads=h,
        layouts=layouts,
        head_layout=np.asarray(index, dtype=np.int32),
        schedule_mode=schedule,
    )
    _warn_empty_rows(pattern)
    pattern.freeze()
    if device is not None:
        pattern.to_torch(device)
    if not cached:
        return pattern
    _CACHE[key] = pattern
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return pattern


def compile_layers(
    spec_or_path: Spec | str | Path,
    seq_len: int | None = None,
    block_size: int | tuple[int, int] | None = None,
    documents: Any = None,
) -> list[tuple[int, CompiledPattern]]:
    """(count, compiled pattern) for each entry of the spec's layer schedule; `documents` resolve the
    layers that depend on them (an error when none does)."""
    spec = as_spec(spec_or_path)
    try:
        n = _seq_len(spec, seq_len)
        out = [
            (count, _compile_layer(spec, k, layer, n, block_size))
            for k, (count, layer) in enumerate(spec.layer_schedule())
        ]
    except SpecError as err:
        if isinstance(spec_or_path, (str, Path)):
            raise locate(err, spec_or_path) from None
        raise
    if documents is None:
        return out
    if not any(uses_documents(pattern) for _, pattern in out):
        raise DocumentsError(f"documents were given, but no layer of {spec.name!r} depends on documents")
    return [
        (count, compile(pattern.spec, seq_len=n, block_size=block_size, documents=documents))
        if uses_documents(pattern)
        else (count, pattern)
        for count, pattern in out
    ]


def _compile_layer(
    spec: Spec, k: int, layer: Spec, n: int, block_size: int | tuple[int, int] | None
) -> CompiledPattern:
    """compile() of the k-th schedule entry; an error in a pattern of its own names `layers[k].pattern`."""
    try:
        return compile(layer, seq_len=n, block_size=block_size)
    except SpecError as err:
        own = spec.layers and spec.layers[k].pattern is not None
        if own and not isinstance(err, ArgumentError) and (err.path or "").startswith("pattern"):
            raise SpecError(err.message, source=err.source, path=f"layers[{k}].{err.path}") from None
        raise
