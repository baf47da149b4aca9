"""The two ways of building a layout agree with each other and with brute force.

`BlockLayout.build` reads a layout off whole-grid maps when the rule stores a large share of
the grid, and off sorted tile lists otherwise. Small grids mostly take the map path, so each
test here forces each path in turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from specgen import brute_force_mask, spec_dicts, tile_shapes

import maskc
from maskc.grid import TileGrid
from maskc.ir import BlockLayout, build
from maskc.ir.build import build_layout
from maskc.lowering import lower_pattern

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: _GRID_MAP_RATIO values that force the tile-list path and the map path.
PATHS = {"tiles": 0, "maps": 1 << 40}


@contextmanager
def _path(name: str) -> Iterator[None]:
    with patch.object(build, "_GRID_MAP_RATIO", PATHS[name]):
        yield


def _build(spec_dict: dict[str, Any], tile: tuple[int, int], path: str) -> BlockLayout:
    spec = maskc.Spec.model_validate(spec_dict)
    grid = TileGrid(spec_dict["seq_len"], *tile)
    with _path(path):
        return build_layout(lower_pattern(spec, spec.pattern, grid.n), grid)


def _assert_exact(layout: BlockLayout, expected: np.ndarray) -> None:
    """Stored tiles, full flags, the transpose and the element mask, against a dense mask."""
    g = layout.grid
    padded = np.zeros((g.row_tiles * g.block_m, g.col_tiles * g.block_n), dtype=bool)
    valid = padded.copy()
    padded[: g.n, : g.n], valid[: g.n, : g.n] = expected, True
    tiles = padded.reshape(g.row_tiles, g.block_m, g.col_tiles, g.block_n)
    in_range = valid.reshape(tiles.shape)
    nonempty = tiles.any(axis=(1, 3))
    full = (tiles == in_range).all(axis=(1, 3))
    rows = layout.tile_rows()
    assert np.array_equal(np.diff(layout.row_ptr), nonempty.sum(axis=1))
    assert np.array_equal(layout.col_idx, np.nonzero(nonempty)[1])
    assert np.array_equal(layout.full, full[nonempty])
    assert np.array_equal(np.diff(layout.col_ptr), nonempty.sum(axis=0))
    assert np.array_equal(layout.row_idx, np.nonzero(nonempty.T)[1])
    assert np.array_equal(layout.row_idx, rows[layout.csc_to_csr])
    assert np.array_equal(layout.full_t, full.T[nonempty.T])
    assert np.array_equal(layout.to_dense(), expected)
    assert np.array_equal(layout.empty_rows(), np.flatnonzero(~expected.any(axis=1)))


def _assert_same(a: BlockLayout, b: BlockLayout) -> None:
    for name, array in a.arrays().items():
        other = b.arrays()[name]
        assert array.dtype == other.dtype, name
        assert np.array_equal(array, other), name


@PROPERTY
@given(spec_dicts(max_n=300, per_head=False), tile_shapes())
def test_map_and_tile_paths_agree_with_brute_force(case: tuple[dict, int], tile: tuple[int, int]) -> None:
    spec_dict, n = case
    expected = brute_force_mask(spec_dict, n)
    mapped, listed = _build(spec_dict, tile, "maps"), _build(spec_dict, tile, "tiles")
    _assert_exact(mapped, expected)
    _assert_same(mapped, listed)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize(
    "pattern",
    [
        {"axial": {"width": 16}},
        {"stride": {"every": 24}},
        [{"stride": {"every": 24}}, {"stride": {"every": 40}}],
        {"intersect": [{"stride": {"every": 3}}, {"window": {"before": 200, "after": 90, "dilation": 2}}]},
        {"difference": [{"dense": {}}, {"stride": {"every": 48}}]},
        {"window": {"before": 2, "after": 1, "granularity": "block"}},
    ],
)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tile", [(16, 16), (32, 16), (16, 64), (128, 32)])
def test_strided_and_banded_layouts_on_many_tiles(path: str, pattern: Any, causal: bool, tile: tuple[int, int]) -> None:
    """Grids of up to 45 × 45 tiles with clipped last tiles: many offsets per class, both paths."""
    spec_dict = {"name": "case", "seq_len": 709, "block_size": 32, "causal": causal, "pattern": pattern}
    _assert_exact(_build(spec_dict, tile, path), brute_force_mask(spec_dict, 709))


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize(
    "pattern",
    [
        {"window": {"before": 10**12, "after": 3}},
        {"window": {"before": 5, "after": 2**40, "dilation": 3}},
        {"stride": {"every": 10**12}},
        [{"stride": {"every": 2**33}}, {"window": {"size": 2**34, "dilation": 2**31 + 1}}],
    ],
)
def test_bounds_and_steps_beyond_the_sequence(path: str, pattern: Any) -> None:
    """Offsets are int32; limits past ±n are clamped without changing any class."""
    spec_dict = {"name": "case", "seq_len": 150, "causal": False, "pattern": pattern}
    _assert_exact(_build(spec_dict, (16, 32), path), brute_force_mask(spec_dict, 150))


@pytest.mark.parametrize("path", sorted(PATHS))
def test_empty_rows_beyond_the_diagonal(path: str) -> None:
    """Rows whose keys lie only in tiles far from the diagonal, and rows with none."""
    pattern = {"difference": [{"stride": {"every": 50}}, {"window": {"size": 0}}]}
    spec_dict = {"name": "case", "seq_len": 90, "causal": False, "pattern": pattern}
    expected = brute_force_mask(spec_dict, 90)
    layout = _build(spec_dict, (16, 16), path)
    assert layout.full_count == 0
    assert len(layout.empty_rows()) > 0
    _assert_exact(layout, expected)
