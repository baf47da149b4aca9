"""Grid windows lowered to tiled orders: the passes are the mask exactly (brute force of the
definitions), a tiled pass's rule on its own positions is its element rule moved by the
permutation, and both backends run the schedules exactly, forward and backward (Triton through
its interpreter)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, grid_spec_dicts
from test_grids_backends import _dense_reference
from test_schedule import _check_schedule

import maskc
from maskc.errors import MaskcWarning
from maskc.rules import Canvas, natten_axis
from maskc.schedule import schedule_of
from maskc.schedule.record import Pass
from maskc.schedule.tiled import TiledCanvas, axis_order, tile_shapes

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _compile(data: dict, mode: str, tile: tuple[int, int] | int | None = None, heads: int = 1) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(data), block_size=tile, schedule=mode, heads=heads)


def _check_local_rule(p: Pass) -> None:
    """The rule a kernel evaluates on pass positions is the element rule at the original positions."""
    if p.local_rule is None:
        return
    rows, cols = np.meshgrid(np.arange(p.nq), np.arange(p.nk), indexing="ij")
    want = p.rule.mask(p.q_index[rows], p.k_index[cols])
    assert np.array_equal(p.local_rule.mask(rows, cols), want)


@PROPERTY
@given(
    grid_spec_dicts(max_side=12), st.sampled_from(["auto", "split"]), st.sampled_from([(16, 16), (32, 16), (16, 32)])
)
def test_tiled_passes_cover_grid_masks_exactly(case: tuple[dict, int], mode: str, tile: tuple[int, int]) -> None:
    data, n = case
    pattern = _compile(data, mode, tile)
    expected = brute_force_mask(data, n)
    for schedule in schedule_of(pattern):
        _check_schedule(schedule, expected)
        for p in schedule.passes:
            _check_local_rule(p)


@pytest.mark.parametrize(
    ("shape", "dilation"), [((6, 10), (1, 1)), ((7, 9), (2, 3)), ((4, 6, 6), (1, 2, 1)), ((5, 4, 3), (3, 1, 2))]
)
def test_tiled_canvas_is_a_permutation(shape: tuple[int, ...], dilation: tuple[int, ...]) -> None:
    source = Canvas(shape=shape, text=3)
    for tile in tile_shapes(shape, int(np.prod(shape)) // shape[0]):
        perm = TiledCanvas(source, dilation, tile).permutation
        assert sorted(perm.tolist()) == list(range(source.n))
        assert perm[-3:].tolist() == [source.n - 3, source.n - 2, source.n - 1], "text tokens stay"


def test_dilated_axis_becomes_contiguous() -> None:
    """Regrouped by residue, a dilated NATTEN window is an interval holding exactly its keys."""
    size, kernel, d = 11, 3, 2
    window = natten_axis(size, kernel, d)
    order = axis_order(size, d)
    local = TiledCanvas(Canvas(shape=(size, 1)), (d, 1), (1, 1)).local_axis(0, window)
    assert local is not None
    q, k = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    assert np.array_equal(local.holds(order[q], order[k]), window.holds(q, k))


def test_tile_shapes_divide_and_fill() -> None:
    shapes = tile_shapes((16, 32, 32), 64)
    assert (4, 4, 4) in shapes and (1, 8, 8) in shapes
    assert all(np.prod(t) == 64 and all(s % x == 0 for s, x in zip((16, 32, 32), t)) for t in shapes)


#: The issue's image shape: large enough that the tiled order pays for its gathers.
NATTEN_2D = {"name": "natten", "grid": {"shape": [128, 128]}, "pattern": {"neighborhood": {"kernel": [13, 13]}}}


def test_neighbourhood_runs_tiled_when_cheaper() -> None:
    """Row-major NATTEN is a band of thin stripes; the tiled pass computes far fewer pairs."""
    single = schedule_of(_compile(NATTEN_2D, "single", 64))[0]
    auto = schedule_of(_compile(NATTEN_2D, "auto", 64))[0]
    assert [p.lowering for p in auto.passes] == ["tiled"]
    assert auto.kernel_work() < single.kernel_work() / 2
    assert auto.predicted_work < auto.single_work


def test_stored_in_the_best_tiles_needs_no_permutation() -> None:
    """When the user already stores tokens in the boxes the tiled order picks, no gather is paid."""
    data = {**NATTEN_2D, "grid": {"shape": [128, 128], "order": {"tiles": [8, 8]}}}
    auto = schedule_of(_compile(data, "auto", 64))[0]
    tiled = schedule_of(_compile(NATTEN_2D, "auto", 64))[0]
    assert auto.kernel_work() == tiled.kernel_work()
    assert all(p.q_identity and p.k_identity for p in auto.passes)


def test_json_reports_the_tile() -> None:
    auto = schedule_of(_compile(NATTEN_2D, "auto", 64))[0]
    described = auto.as_dict()["passes"][0]
    assert described["lowering"] == "tiled" and np.prod(described["tile"]) == 64
    assert auto.passes[0].label.startswith("tiled ")


#: Small grids for the backends: dilation, text, both storage orders, 2-D and 3-D.
BACKEND_CASES = {
    "natten-2d-dilated-text": (
        {"grid": {"shape": [8, 12], "text": 3}, "pattern": {"neighborhood": {"kernel": [3, 5], "dilation": [2, 1]}}},
        (16, 16),
    ),
    "natten-3d-causal-tiled-storage": (
        {
            "grid": {"shape": [4, 4, 8], "order": {"tiles": [1, 2, 4]}},
            "pattern": {"neighborhood": {"kernel": [2, 3, 3], "causal": [True, False, False]}},
        },
        (16, 16),
    ),
    "sta-3d-row-major-text": (
        {
            "grid": {"shape": [4, 8, 8], "text": 5},
            "pattern": {"tiles": {"tile": [2, 4, 4], "kernel": [2, 8, 4]}},
        },
        (32, 16),
    ),
    "natten-2d-with-window": (
        {"grid": {"shape": [12, 8]}, "pattern": [{"neighborhood": {"kernel": [5, 3]}}, {"window": {"size": 2}}]},
        (16, 16),
    ),
}


def _check_backend(name: str, backend: str, mode: str) -> None:
    data, tile = BACKEND_CASES[name]
    pattern = _compile({"name": name, **data}, mode, tile, heads=2)
    assert any(p.lowering == "tiled" for s in schedule_of(pattern) for p in s.passes), "the case must lower"
    n = pattern.n
    gen = torch.Generator().manual_seed(n)
    q, k, v, g = (torch.randn(1, 2, n, 16, generator=gen) for _ in range(4))
    mask = torch.as_tensor(brute_force_mask({"name": name, **data}, n))
    want, want_grads = _dense_reference(q, k, v, mask, g)
    dtype = torch.float64 if backend == "cpu" else torch.float32
    leaves = [x.to(dtype).requires_grad_() for x in (q, k, v)]
    out = maskc.attention(*leaves, pattern, backend=backend)
    (out * g.to(dtype)).sum().backward()
    bound = 1e-9 if backend == "cpu" else 1e-4
    assert ((out.double() - want).norm() / want.norm()).item() < bound
    for label, leaf, grad in zip("qkv", leaves, want_grads):
        assert ((leaf.grad.double() - grad).norm() / grad.norm()).item() < bound, f"d{label}"


@pytest.mark.parametrize("name", sorted(BACKEND_CASES))
def test_cpu_backend_runs_tiled_schedules_exactly(name: str) -> None:
    _check_backend(name, "cpu", "split")


@pytest.fixture
def interpreter(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("MASKC_CACHE_DIR", str(tmp_path))


@pytest.mark.parametrize("name", sorted(BACKEND_CASES))
def test_triton_runs_tiled_schedules_exactly(name: str, interpreter: None) -> None:
    _check_backend(name, "triton", "split")
