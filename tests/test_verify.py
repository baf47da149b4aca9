"""maskc.verify is exact: reach, min_layers, counterexamples and witness paths against boolean matrix powers."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, small_version, spec_dicts, tile_shapes

import maskc
from maskc.errors import MaskcError, MaskcWarning
from maskc.reach.bitsets import BitModel
from maskc.reach.intervals import NotIntervalShapedError
from maskc.reach.product import NotProductShapedError
from maskc.reach.search import BitEngine, GridEngine, IntervalEngine
from maskc.reach.stack import build_stack
from maskc.verify import Report, verify

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- brute force


def layer_masks(spec: dict[str, Any], n: int) -> list[np.ndarray]:
    """One schedule cycle of dense layer masks, each the union of its heads (the spec semantics)."""
    entries = spec.get("layers") or [{"count": 1}]
    cycle = []
    for entry in entries:
        if entry.get("mixer", "attention") != "attention":  # recurrent: j ≤ i; identity: self only
            mask = np.tril(np.ones((n, n), dtype=bool), 0 if entry["mixer"] == "recurrent" else -n) | np.eye(
                n, dtype=bool
            )
            cycle += [mask] * entry.get("count", 1)
            continue
        if "pattern" in entry:
            layer = {**spec, "pattern": entry["pattern"]}
            layer.pop("head_patterns", None)
            layer.pop("heads", None)
        else:
            layer = spec
        mask = brute_force_mask(layer, n)
        cycle += [mask.any(axis=0) if mask.ndim == 3 else mask] * entry.get("count", 1)
    return cycle


def targets(n: int, causal: bool) -> np.ndarray:
    return np.tril(np.ones((n, n), dtype=bool)) if causal else np.ones((n, n), dtype=bool)


class Brute:
    """R_l[i, j] = key j reaches query i within l layers, by boolean matrix products."""

    def __init__(self, cycle: list[np.ndarray], causal: bool) -> None:
        self.cycle, self.n = cycle, cycle[0].shape[0]
        self.need = targets(self.n, causal)
        self.history = [np.eye(self.n, dtype=bool)]

    def mask(self, layer: int) -> np.ndarray:
        return self.cycle[(layer - 1) % len(self.cycle)]

    def reach(self, layers: int) -> np.ndarray:
        while len(self.history) <= layers:
            r = self.history[-1]
            step = (self.mask(len(self.history)).astype(np.float32) @ r.astype(np.float32)) > 0
            self.history.append(r | step)
        return self.history[layers]

    def min_layers(self) -> int | None:
        layers = unchanged = 0
        while not (self.reach(layers) | ~self.need).all():
            layers += 1
            unchanged = unchanged + 1 if np.array_equal(self.reach(layers), self.reach(layers - 1)) else 0
            if unchanged >= len(self.cycle):
                return None
        return layers


def check_path(brute: Brute, path: tuple[int, ...], i: int, j: int) -> None:
    assert path[0] == j and path[-1] == i
    for layer in range(1, len(path)):
        now, before = path[layer], path[layer - 1]
        assert now == before or brute.mask(layer)[now, before], f"layer {layer}: {now} does not attend {before}"
    steps = len(path) - 1
    assert brute.reach(steps)[i, j]
    if steps:
        assert not brute.reach(steps - 1)[i, j], "a witness must be shortest"


def quiet_verify(subject: Any, layers: int, **kw: Any) -> Report:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return verify(subject, layers, **kw)


def check_report(report: Report, brute: Brute, layers: int) -> None:
    reach = brute.reach(layers)
    holds = bool((reach | ~brute.need).all())
    assert report.reachable == holds
    assert report.min_layers == brute.min_layers()
    if holds:
        assert report.counterexample is None and report.reach is None
    else:
        i, j = report.counterexample
        assert brute.need[i, j] and not reach[i, j], "the counterexample must be a pair that must reach and does not"
        assert report.reach.source == j and report.reach.count == int(reach[:, j].sum())
        assert report.reach.runs[0][0] == int(np.flatnonzero(reach[:, j])[0])


# ----------------------------------------------------------------------------- properties


@PROPERTY
@given(spec_dicts(max_n=200, layers=True), st.integers(0, 6), st.data())
def test_verify_matches_brute_force(case: tuple[dict, int], layers: int, data: st.DataObject) -> None:
    spec_dict, n = case
    brute = Brute(layer_masks(spec_dict, n), spec_dict["causal"])
    report = quiet_verify(maskc.Spec.model_validate(spec_dict), layers)
    check_report(report, brute, layers)
    i, j = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, n - 1))
    witness = report.path(i, j)
    if brute.reach(layers)[i, j]:
        check_path(brute, witness.positions, i, j)
    else:
        assert witness is None


@PROPERTY
@given(spec_dicts(max_n=300, per_head=False, layers=True), st.integers(1, 4))
def test_both_engines_agree_with_brute_force(case: tuple[dict, int], layers: int) -> None:
    """The interval engine (where it applies) and the bit-parallel engine, each against brute force,
    layer schedules included (with `mixer: recurrent` and `identity` layers)."""
    spec_dict, n = case
    brute = Brute(layer_masks(spec_dict, n), spec_dict["causal"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        stack = build_stack(maskc.Spec.model_validate(spec_dict))
    engines: list[Any] = [BitEngine(stack, "test")]
    with contextlib.suppress(NotIntervalShapedError):
        engines.append(IntervalEngine(stack))
    for engine in engines:
        outcome = engine.search(layers, None)
        assert outcome.min_layers == brute.min_layers(), engine.method
        if outcome.shortfall is None:
            assert (brute.reach(layers) | ~brute.need).all()
        else:
            at, j, reached = outcome.shortfall
            assert at == layers and np.array_equal(reached, brute.reach(layers)[:, j]), engine.method
            assert not (reached | ~brute.need[:, j]).all()


@settings(max_examples=40, deadline=None)
@given(spec_dicts(max_n=200, per_head=False), tile_shapes(), st.integers(1, 3))
def test_compiled_pattern_is_every_layer(case: tuple[dict, int], tile: tuple[int, int], layers: int) -> None:
    """A compiled pattern (any tile shape, rectangular included) is used at every layer."""
    spec_dict, n = case
    spec_dict = {k: v for k, v in spec_dict.items() if k != "layers"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec.model_validate(spec_dict), block_size=tile)
    check_report(quiet_verify(pattern, layers), Brute(layer_masks(spec_dict, n), spec_dict["causal"]), layers)


def without_clusters(data: Any) -> Any:
    """A spec in file form with every cluster replaced by the empty pattern: its static lower bound."""
    if isinstance(data, dict):
        if "cluster" in data:
            return {"difference": [{"dense": {}}, {"dense": {}}]}
        return {key: without_clusters(value) for key, value in data.items()}
    if isinstance(data, list):
        return [without_clusters(item) for item in data]
    return data


CATALOGUE = sorted(p for p in (Path(__file__).resolve().parent.parent / "specs").glob("*.yaml"))


@pytest.mark.parametrize("path", CATALOGUE, ids=[p.stem for p in CATALOGUE])
def test_catalogue_specs_at_small_n(path: Path) -> None:
    """Every spec of specs/ at n = 300 (a grid spec on a small canvas), each applicable engine against brute force."""
    spec, n = small_version(maskc.load(path), 300)
    spec_dict = without_clusters(spec.to_data())
    brute = Brute(layer_masks(spec_dict, n), spec.causal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        stack = build_stack(spec, seq_len=n)
    engines: list[Any] = [BitEngine(stack, "test")]
    with contextlib.suppress(NotIntervalShapedError):
        engines.append(IntervalEngine(stack))
    with contextlib.suppress(NotProductShapedError):
        engines.append(GridEngine(stack))
    for engine in engines:
        assert engine.search(2, None).min_layers == brute.min_layers(), engine.method


# ----------------------------------------------------------------------------- the seed documents' examples


def spec(pattern: Any, n: int, causal: bool = False, **extra: Any) -> maskc.Spec:
    return maskc.Spec(name="example", seq_len=n, causal=causal, pattern=pattern, **extra)


def test_window_32_with_24_layers_never_connects_0_and_5000() -> None:
    report = quiet_verify(spec({"window": {"size": 32}}, 5001), 24)
    assert not report.reachable and report.counterexample == (5000, 0)
    assert report.reach.runs == ((0, 16 * 24),)
    assert report.path(5000, 0) is None
    assert report.min_layers == -(-5000 // 16)
    assert report.path(5000, 0, unbounded=True).layers == report.min_layers


def test_dilated_window_alone_never_mixes_odd_and_even() -> None:
    report = quiet_verify(spec({"window": {"before": 8, "after": 8, "dilation": 2}}, 512), 64)
    assert report.min_layers is None and not report.reachable
    i, j = report.counterexample
    assert (i - j) % 2 == 1
    assert report.path(1, 0, unbounded=True) is None
    assert report.path(510, 0).layers == 510 // 16 + (510 % 16 > 0)


@pytest.mark.parametrize(
    "pattern",
    [
        [{"window": {"before": 16, "after": 16}}, {"global": {"tokens": [0]}}],
        [{"window": {"before": 1, "after": 1, "granularity": "block"}}, {"global": {"first": 32}}],
        [
            {"window": {"before": 1, "after": 1, "granularity": "block"}},
            {"global": {"first": 32}},
            {"random": {"per_row": 2}},
        ],
    ],
    ids=["longformer", "bigbird-itc", "bigbird-random"],
)
def test_global_tokens_connect_any_pair_in_two_hops(pattern: Any) -> None:
    report = quiet_verify(spec(pattern, 2048, block_size=32), 2)
    assert report.reachable and report.min_layers == 2
    witness = report.path(2047, 100)
    assert witness.layers == 2 and witness.positions[1] < 32


def test_causal_window_reaches_exactly_l_times_the_window() -> None:
    report = quiet_verify(spec({"window": {"before": 64, "after": 0}}, 64 * 10 + 1, causal=True), 10)
    assert report.reachable and report.min_layers == 10
    assert report.path(640, 0).positions == tuple(range(0, 641, 64))
    short = quiet_verify(spec({"window": {"before": 64, "after": 0}}, 64 * 10 + 2, causal=True), 10)
    assert not short.reachable and short.counterexample == (641, 0) and short.min_layers == 11


def test_layer_schedule_with_a_dense_layer() -> None:
    local = spec(
        {"window": {"before": 0, "after": 0}},
        4096,
        causal=True,
        layers=[{"count": 3}, {"count": 1, "pattern": {"dense": {}}}],
    )
    report = quiet_verify(local, 3)
    assert not report.reachable and report.min_layers == 4
    assert quiet_verify(local, 4).reachable


def test_hub_information_that_one_layer_leaves_alone_moves_in_the_next() -> None:
    """Token 0 is a hub; layer A gives it nothing to spread, layer B does (settled sets must wake up)."""
    hub_rows = {"global": {"tokens": [0], "direction": "rows"}}
    spec_dict = {
        "name": "schedule",
        "seq_len": 40,
        "pattern": {"window": {"before": 0, "after": 0}},
        "layers": [
            {"count": 2, "pattern": [{"window": {"before": 0, "after": 0}}, hub_rows]},
            {"count": 1, "pattern": [{"window": {"before": 1, "after": 1}}, hub_rows]},
        ],
    }
    report = quiet_verify(maskc.Spec.model_validate(spec_dict), 30)
    assert report.method.startswith("interval")
    check_report(report, Brute(layer_masks(spec_dict, 40), causal=False), 30)


def test_dynamic_parts_are_ignored_and_said_so() -> None:
    pattern = [{"window": {"before": 8, "after": 0}}, {"cluster": {"clusters": 4}}]
    report = quiet_verify(spec(pattern, 256, causal=True), 32)
    assert report.dynamic_ignored and report.dynamic
    assert report.reachable and report.min_layers == 32
    assert any("run-time" in line for line in report.lines())
    assert not quiet_verify(spec({"window": {"before": 8, "after": 0}}, 256, causal=True), 32).dynamic_ignored


def test_bad_input_is_a_maskc_error() -> None:
    window = spec({"window": {"size": 8}}, 64)
    with pytest.raises(MaskcError):
        quiet_verify(window, -1)
    with pytest.raises(MaskcError):
        quiet_verify(window, 2).path(64, 0)
    with pytest.raises(MaskcError):
        quiet_verify(maskc.compile(window), 2, seq_len=32)


def test_bit_engine_refuses_hopeless_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("maskc.reach.bitsets.WORK_LIMIT", 10)
    with pytest.raises(maskc.TooLargeError):
        BitModel(build_stack(spec({"stride": {"every": 3}}, 256)))
