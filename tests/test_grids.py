"""Grids: neighborhood (NATTEN) and tiles (STA) against brute-force evaluations of their definitions."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from specgen import brute_force_mask, grid_cells, grid_spec_dicts, natten_axis_rule, sta_axis_rule, tile_shapes
from test_compiler_properties import _check_layout

import maskc
from maskc.errors import MaskcWarning, SpecError
from maskc.rules import AxisWindow, Canvas, natten_axis, sta_axis

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _compile(spec_dict: dict, tile: tuple[int, int] | int | None = None) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(spec_dict), block_size=tile)


@PROPERTY
@given(grid_spec_dicts(max_side=16), tile_shapes())
def test_grid_patterns_match_brute_force(case: tuple[dict, int], tile: tuple[int, int]) -> None:
    spec_dict, n = case
    expected = brute_force_mask(spec_dict, n)
    pattern = _compile(spec_dict, tile)
    assert pattern.n == n
    assert np.array_equal(pattern.to_dense(), expected)
    layout = pattern.layouts[0]
    _check_layout(layout, expected)
    assert layout.element_count() == int(expected.sum())
    assert np.array_equal(layout.empty_rows(), np.flatnonzero(~expected.any(axis=1)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid_spec_dicts(max_side=7))
def test_canvas_coordinates_match_the_storage_order(case: tuple[dict, int]) -> None:
    grid = case[0]["grid"]
    order = grid.get("order", "row_major")
    canvas = Canvas(tuple(grid["shape"]), None if order == "row_major" else tuple(order["tiles"]), grid.get("text", 0))
    cells = grid_cells(grid)
    positions = np.arange(len(cells))
    assert np.array_equal(np.stack(canvas.coords(positions), axis=1), cells)
    assert np.array_equal(canvas.positions(list(cells.T)), positions)
    for lo in range(len(cells)):
        for hi in range(lo, min(len(cells), lo + 9)):
            boxes = canvas.boxes(lo, hi)
            covered = [tuple(np.add(b.lo, x)) for b in boxes for x in np.ndindex(*(np.subtract(b.hi, b.lo) + 1))]
            assert len(covered) == hi - lo + 1, "boxes overlap or miss cells"
            assert set(covered) == {tuple(x) for x in cells[lo : hi + 1].tolist()}


def _axis_windows() -> list[tuple[str, AxisWindow, object]]:
    """Every small NATTEN and STA axis, with the brute-force rule of its definition."""
    out: list[tuple[str, AxisWindow, object]] = []
    for size in range(1, 13):
        for d in range(1, 4):
            for k in range(1, size // d + 1):
                for causal in (False, True):
                    if causal or k % 2:
                        rule = functools.partial(natten_axis_rule, size=size, kernel=k, dilation=d, causal=causal)
                        out.append((f"natten {size} k{k} d{d} c{causal}", natten_axis(size, k, d, causal), rule))
        for t in (t for t in range(1, size + 1) if size % t == 0):
            for k in range(t, size + 1, t):
                out.append(
                    (
                        f"sta {size} t{t} k{k}",
                        sta_axis(size, t, k),
                        functools.partial(sta_axis_rule, size=size, tile=t, kernel=k),
                    )
                )
    return out


def test_axis_windows_classify_every_interval_pair_exactly() -> None:
    """Along one axis: the elements, and any/full over every pair of intervals, against brute force."""
    for name, axis, rule in _axis_windows():
        size = axis.size
        q, k = np.arange(size)[:, None], np.arange(size)[None, :]
        table = rule(q, k)
        assert np.array_equal(axis.holds(q, k), table), name
        lo, hi = np.triu_indices(size)
        q0, k0 = (x.reshape(-1) for x in np.meshgrid(lo, lo, indexing="ij"))
        q1, k1 = (x.reshape(-1) for x in np.meshgrid(hi, hi, indexing="ij"))
        # pairs holding in each block, by inclusion-exclusion on a 2-D prefix sum of the table
        prefix = np.zeros((size + 1, size + 1), dtype=np.int64)
        prefix[1:, 1:] = table.cumsum(axis=0).cumsum(axis=1)
        count = prefix[q1 + 1, k1 + 1] - prefix[q0, k1 + 1] - prefix[q1 + 1, k0] + prefix[q0, k0]
        cls = axis.classes(q0, q1, k0, k1)
        assert np.array_equal(cls.any, count > 0), name
        assert np.array_equal(cls.full, count == (q1 - q0 + 1) * (k1 - k0 + 1)), name


def test_natten_2d_large_counts_match_direct_evaluation() -> None:
    """128 × 128, kernel 13: every query attends exactly 169 keys (clamped centres), in both orders."""
    for order in ("row_major", {"tiles": [8, 8]}):
        spec = {
            "name": "n",
            "grid": {"shape": [128, 128], "order": order},
            "pattern": {"neighborhood": {"kernel": [13, 13]}},
        }
        for tile in (64, 128):
            layout = _compile(spec, tile).layouts[0]
            assert layout.element_count() == 128 * 128 * 169


def test_sta_in_its_own_tile_order_is_all_full_tiles() -> None:
    spec = {
        "name": "sta",
        "grid": {"shape": [24, 48, 48], "order": {"tiles": [4, 8, 8]}},
        "pattern": {"tiles": {"tile": [4, 8, 8], "kernel": [12, 24, 24]}},
    }
    for tile in (64, 128):
        layout = _compile(spec, tile).layouts[0]
        assert layout.full_count == layout.nnz > 0
        # every query tile of STA attends 3 x 3 x 3 tiles of 256 tokens
        assert layout.element_count() == 24 * 48 * 48 * 27 * 256


def test_seq_len_follows_from_the_grid() -> None:
    spec = maskc.Spec(name="g", grid={"shape": [4, 6], "text": 3}, pattern={"neighborhood": {"kernel": [3, 3]}})
    assert spec.seq_len == 27
    assert maskc.compile(spec).n == 27
    assert maskc.Spec.model_validate(spec.to_data()) == spec


G = "grid: {shape: [8, 8]}\n"
NATTEN = "pattern: {neighborhood: {kernel: %s}}\n"
STA = "pattern: {tiles: {tile: %s, kernel: %s}}\n"
DENSE = "pattern: {dense: {}}\n"

#: (spec text after `name:`, line of the error, its field path, a part of its message)
ERRORS = [
    ("seq_len: 100\n" + G + DENSE, 3, "grid", "holds 64 tokens, but seq_len is 100"),
    ("grid: {shape: [8, 8], order: {tiles: [3, 4]}}\n" + DENSE, 2, "grid.order.tiles[0]", "does not divide"),
    ("grid: {shape: [8, 8], order: {tiles: [4]}}\n" + DENSE, 2, "grid.order.tiles", "2 axes"),
    ("grid: {shape: [8]}\n" + DENSE, 2, "grid.shape", "at least 2"),
    ("grid: {shape: [65536, 65536]}\n" + DENSE, 2, "grid.shape", "over 2,147,483,647"),
    ("seq_len: 64\n" + NATTEN % "[3, 3]", 3, "pattern.neighborhood", "needs the spec's grid"),
    (G + NATTEN % "[9, 3]", 3, "pattern.neighborhood.kernel[0]", "larger than the grid"),
    (G + NATTEN % "[3, 4]", 3, "pattern.neighborhood.kernel[1]", "even"),
    (G + NATTEN % "[3, 3], dilation: [3, 1]", 3, "pattern.neighborhood.kernel[0]", "3 × dilation 3"),
    (G + NATTEN % "[3, 3, 3]", 3, "pattern.neighborhood.kernel", "3 entries"),
    (G + STA % ("[3, 4]", "[6, 4]"), 3, "pattern.tiles.tile[0]", "does not divide"),
    (G + STA % ("[4, 4]", "[6, 4]"), 3, "pattern.tiles.kernel[0]", "not a multiple"),
    (G + STA % ("[4, 4]", "[12, 4]"), 3, "pattern.tiles.kernel[0]", "larger than the grid"),
]


@pytest.mark.parametrize("text, line, path, message", ERRORS)
def test_bad_grids_are_located_errors(tmp_path, text: str, line: int, path: str, message: str) -> None:
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text("name: bad\n" + text)
    with pytest.raises(SpecError) as err:
        maskc.compile(spec_file)
    assert err.value.path == path and message in err.value.message, str(err.value)
    assert err.value.source == str(spec_file) and err.value.line == line


def test_seq_len_override_must_match_the_grid() -> None:
    spec = maskc.Spec(name="g", grid={"shape": [8, 8]}, pattern={"neighborhood": {"kernel": [3, 3]}})
    with pytest.raises(SpecError, match="conflicts with the grid"):
        maskc.compile(spec, seq_len=65)
