"""The explorer's computations: a spec in (YAML text, or the controls' data), pictures and numbers out.

Everything is computed by maskc itself: `compile` and draw's colouring for the mask, the catalogue's
densities and explain's growth for the numbers, `verify` for min_layers, draw's layer-count map for
the reach picture, `maskc.recognise` (what `maskc explain` uses) for the model, `maskc.kv_retention`
for the KV cache a decoder keeps. The page only shows what comes back.

Each endpoint takes a decoded JSON request and returns (HTTP status, JSON-ready dict). A bad spec
is a located error (the message the CLI prints, its line and field path), never an exception; a
malformed request raises RequestError (HTTP 400).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml

from maskc.catalogue import schedule_densities, schedule_depth
from maskc.draw import (
    REACH_LIMIT,
    cell_colour_index,
    cell_scale,
    layers_needed,
    legend,
    lighting_leaves,
    primitive_colour,
    rasterise,
    reach_cells,
    reach_colours,
    spec_panels,
    tile_shade,
)
from maskc.errors import MaskcError, SpecError
from maskc.explain import empty_row_warnings, growth, reach_warning, residue_warnings
from maskc.explore.images import png_data_url
from maskc.explore.kv import kv_view
from maskc.loader import locate_text, parse_spec
from maskc.recognise import recognise
from maskc.spec import Spec

#: Most cells per side of the mask picture; larger n is drawn in s × s regions (s a power of two).
MASK_CELLS = 512
#: n shown for a spec without seq_len.
DEFAULT_N = 4096
#: Largest n the explorer compiles (the mask picture's cost grows with the stored tiles).
MAX_N = 1 << 16
#: Default and largest n of the reach picture (draw's layer-count map multiplies dense n × n matrices).
REACH_N = 512
MAX_REACH_N = min(1024, REACH_LIMIT)
#: Deepest model the layers slider asks about.
MAX_LAYERS = 64
#: Results kept per cache.
CACHE_ENTRIES = 64
#: Fields of the spec that the page edits as YAML text beside the controls.
YAML_FIELDS = ("head_patterns", "layers")


class RequestError(Exception):
    """A request the page would never send (wrong types, missing fields): HTTP 400."""


class _Cache:
    """A small thread-safe LRU of computed results."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, key: Any) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


# The mask and the slower analyses run under separate locks, so a redraw never waits for a proof.
_MASK_LOCK = threading.Lock()
_ANALYSIS_LOCK = threading.Lock()
_MASKS, _ANALYSES, _REACH = _Cache(), _Cache(), _Cache(8)


# ----------------------------------------------------------------------------- reading requests


@dataclass(frozen=True)
class SpecText:
    """A validated spec, the YAML text it was read from, and the name errors give that text."""

    spec: Spec
    text: str
    source: str

    @property
    def key(self) -> str:
        return json.dumps(self.spec.to_data(), sort_keys=True)

    def located(self, err: SpecError) -> SpecError:
        return locate_text(err, self.text, self.source)


def _field(request: dict[str, Any], name: str, kind: type, default: Any = None) -> Any:
    value = request.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise RequestError(f"`{name}` must be a {kind.__name__}, got {type(value).__name__}")
    return value


#: libyaml's emitter where PyYAML was built with it (several times faster), else the Python one.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None)


def _with_yaml_fields(data: dict[str, Any], texts: dict[str, Any]) -> dict[str, Any]:
    """The controls' spec data with head_patterns and layers taken from their YAML boxes."""
    data = dict(data)
    for name in YAML_FIELDS:
        text = texts.get(name)
        if text is None:
            continue
        if not isinstance(text, str):
            raise RequestError(f"`yaml_fields.{name}` must be a string")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.MarkedYAMLError as err:
            where = f" (its line {err.problem_mark.line + 1})" if err.problem_mark is not None else ""
            raise SpecError(f"not valid YAML in the {name} box{where}: {err.problem}", path=name) from None
        except yaml.YAMLError as err:
            raise SpecError(f"not valid YAML in the {name} box: {err}", path=name) from None
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def spec_text_of(request: dict[str, Any]) -> tuple[str, bool]:
    """The spec text of a request: `yaml` (typed in the editor), or `data` (the controls' spec as JSON,
    with `yaml_fields` holding head_patterns and layers as YAML) written out as YAML; True for the latter,
    whose text the page shows in its editor."""
    text = _field(request, "yaml", str)
    if text is not None:
        return text, False
    data = _field(request, "data", dict)
    if data is None:
        raise RequestError("the request needs `yaml` (spec text) or `data` (spec fields)")
    return _dump(_with_yaml_fields(data, _field(request, "yaml_fields", dict, {}))), True


def start_n(text: str) -> int:
    """The n the page opens at: the spec's seq_len (at most MAX_N), or DEFAULT_N when it has none or is bad."""
    try:
        seq_len = parse_spec(text).seq_len
    except MaskcError:
        seq_len = None
    return DEFAULT_N if seq_len is None else min(seq_len, MAX_N)


def _bounded(request: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int:
    value = _field(request, name, int, default)
    if value is None:
        raise SpecError(f"no {name}: set seq_len in the spec or n in the page", path="seq_len")
    if not low <= value <= high:
        raise MaskcError(f"{name} must be in {low} … {high} in the explorer, got {value}")
    return value


def _error(err: MaskcError) -> dict[str, Any]:
    line = err.line if isinstance(err, SpecError) else None
    path = err.path if isinstance(err, SpecError) else None
    return {"ok": False, "error": {"message": str(err), "line": line, "path": path}}


def _respond(request: Any, source: str, compute: Callable[[SpecText, dict[str, Any]], dict[str, Any]]) -> Any:
    """(status, body): 200 with the computed fields, or 422 with a located error for a bad spec."""
    if not isinstance(request, dict):
        raise RequestError("the request body must be a JSON object")
    started = time.perf_counter()
    echo: dict[str, str] = {}
    try:
        text, fresh = spec_text_of(request)
        echo = {"yaml": text} if fresh else {}
        spec_text = SpecText(parse_spec(text, source), text, source)
        try:
            data = spec_text.spec.to_data()
            fields = {name: _dump(data[name]) if name in data else "" for name in YAML_FIELDS}
            body = {"ok": True, **echo, "data": data, "yaml_fields": fields, **compute(spec_text, request)}
            status = 200
        except SpecError as err:
            raise spec_text.located(err) from None
    except MaskcError as err:
        body, status = {**_error(err), **echo}, 422
    body["ms"] = round(1000 * (time.perf_counter() - started), 1)
    return status, body


# ----------------------------------------------------------------------------- the mask and its numbers


def _ratio(value: float | None) -> str | None:
    """A fraction of dense as the page prints it: "0.1218× (8.2× fewer)"."""
    if value is None:
        return None
    fewer = f" ({1 / value:,.1f}× fewer)" if 0 < value < 1 else ""
    return f"{value:.4f}×{fewer}"


def mask_view(spec: Spec, n: int) -> dict[str, Any]:
    """The mask pictures (one per distinct pattern), their legend, and the pattern's numbers at n."""
    panels = spec_panels(spec, n)
    names, per_panel = legend(panels)
    scale = cell_scale(n, MASK_CELLS)
    pictures, used, shades = [], set(), set()
    for panel, indices in zip(panels, per_panel):
        index, table, lit, shaded = cell_colour_index(rasterise(panel, lighting_leaves(panel.rule), scale), indices)
        used |= lit
        shades |= shaded
        layout = panel.layout
        pictures.append(
            {
                "title": panel.title,
                "heads": panel.heads,
                "png": png_data_url(index, table),
                "tiles_stored": layout.nnz,
                "tiles_full": layout.full_count,
                "tiles_total": layout.grid.row_tiles * layout.grid.col_tiles,
                "tile": [layout.grid.block_m, layout.grid.block_n],
                "dynamic": layout.rule.dynamic,
            }
        )
    key = [{"name": names[k], "colour": primitive_colour(k)} for k in sorted(used)]
    key += [{"name": f"masked pair in a {k} stored tile", "colour": tile_shade(k)} for k in sorted(shades)]
    densities = schedule_densities(spec, n)
    grown = growth(spec, n)
    side = -(-n // scale)
    note = (
        ""
        if scale == 1
        else f"drawn in {side} × {side} cells: a cell is {scale}×{scale} tokens, lit when any pair in it is active"
    )
    return {
        "n": n,
        "scale": scale,
        "cells": side,
        "note": note,
        "panels": pictures,
        "legend": key,
        "numbers": {
            "heads": spec.heads or 1,
            "causal": spec.causal,
            "depth": schedule_depth(spec),
            "density": densities.element,
            "flops_vs_dense": _ratio(densities.element),
            "kernel_work": _ratio(densities.tile),
            "tile_density": densities.tile,
            "complexity": None if grown is None else grown.complexity,
            "exponent": None if grown is None else round(grown.exponent, 3),
        },
    }


def _view_at_n(
    request: Any, source: str, cache: _Cache, lock: threading.Lock, view: Callable[[Spec, int], dict[str, Any]]
) -> tuple[int, dict[str, Any]]:
    """(status, body) of `view` of the request's spec at its n, computed once per (spec, n)."""

    def compute(spec_text: SpecText, request: dict[str, Any]) -> dict[str, Any]:
        n = _bounded(request, "n", spec_text.spec.seq_len, 1, MAX_N)
        key = (spec_text.key, n)
        result = cache.get(key)
        if result is None:
            with lock:
                result = view(spec_text.spec, n)
            cache.put(key, result)
        return result

    return _respond(request, source, compute)


def mask(request: Any, source: str) -> tuple[int, dict[str, Any]]:
    """POST /api/mask: {yaml | data, n} → the pictures, legend and numbers."""
    return _view_at_n(request, source, _MASKS, _MASK_LOCK, mask_view)


# ----------------------------------------------------------------------------- reach and recognition


def recognised(spec: Spec, n: int) -> dict[str, Any] | None:
    """The catalogue model this spec is, as `maskc explain` recognises it: name, score in [0, 1], reason."""
    found = recognise(spec, n)
    if found is None:
        return None
    return {"name": found.name, "score": round(float(found.score), 3), "reason": found.reason}


def analysis_view(spec: Spec, n: int) -> dict[str, Any]:
    """min_layers at n (exact, `maskc.verify`), explain's warnings, the recognised model and the KV cache."""
    depth = schedule_depth(spec)
    min_layers, reach = reach_warning(spec, n, depth)
    return {
        "n": n,
        "depth": depth,
        "min_layers": min_layers,
        "warnings": reach + residue_warnings(spec, n) + empty_row_warnings(spec, n),
        "dynamic": spec.is_dynamic(),
        "recognised": recognised(spec, n),
        "kv": kv_view(spec, n, MASK_CELLS),
    }


def analysis(request: Any, source: str) -> tuple[int, dict[str, Any]]:
    """POST /api/analysis: {yaml | data, n} → min_layers, warnings and the recognised model."""
    return _view_at_n(request, source, _ANALYSES, _ANALYSIS_LOCK, analysis_view)


def _layer_counts(spec_text: SpecText, n: int, layers: int) -> np.ndarray:
    """draw's layer-count map, computed once per spec and n for the deepest L asked so far."""
    key = (spec_text.key, n)
    cached = _REACH.get(key)
    if cached is not None:
        need, computed = cached
        if layers <= computed or (need >= 0).all():
            return need
    with _ANALYSIS_LOCK:
        need = layers_needed(spec_text.spec, n, layers)
    _REACH.put(key, (need, layers))
    return need


def reach_view(spec_text: SpecText, n: int, layers: int) -> dict[str, Any]:
    """The reach picture: how many layers key j needs to reach query i, up to `layers`."""
    need = _layer_counts(spec_text, n, layers)
    scale = cell_scale(n, MASK_CELLS)
    cells = reach_cells(need, layers, spec_text.spec.causal, scale)
    required = np.tril(np.ones((n, n), dtype=bool), -1) | np.triu(np.ones((n, n), dtype=bool), 1)
    if spec_text.spec.causal:
        required = np.tril(required)
    reached = int(((need >= 1) & (need <= layers) & required).sum())
    colours = reach_colours(layers)  # for the values −1 … L + 1 of the cells
    return {
        "n": n,
        "layers": layers,
        "png": png_data_url(cells + 1, colours),
        "reached": reached,
        "pairs": int(required.sum()),
        "scale": scale,
        "ramp": [_hex(c) for c in colours[2:-1]],
        "not_within": _hex(colours[-1]),
    }


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgb)


def reach(request: Any, source: str) -> tuple[int, dict[str, Any]]:
    """POST /api/reach: {yaml | data, n, layers} → the layer-count picture at n (at most MAX_REACH_N)."""

    def compute(spec_text: SpecText, request: dict[str, Any]) -> dict[str, Any]:
        n = _bounded(request, "n", REACH_N, 2, MAX_REACH_N)
        layers = _bounded(request, "layers", 1, 1, MAX_LAYERS)
        return reach_view(spec_text, n, layers)

    return _respond(request, source, compute)
