"""The IR is exact: its element mask, full/partial flags and transpose match brute force."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, spec_dicts, tile_shapes

import maskc
from maskc.errors import MaskcWarning
from maskc.ir import BlockLayout

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _compile(spec_dict: dict, tile: tuple[int, int]) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(spec_dict), block_size=tile)


def _tile_view(mask: np.ndarray, layout: BlockLayout) -> np.ndarray:
    """(row_tiles, col_tiles, BM, BN) view of a dense mask, padded with False."""
    g = layout.grid
    padded = np.zeros((g.row_tiles * g.block_m, g.col_tiles * g.block_n), dtype=bool)
    padded[: g.n, : g.n] = mask
    return padded.reshape(g.row_tiles, g.block_m, g.col_tiles, g.block_n).transpose(0, 2, 1, 3)


def _check_layout(layout: BlockLayout, expected: np.ndarray) -> None:
    g = layout.grid
    tiles = _tile_view(expected, layout)
    valid = _tile_view(np.ones_like(expected), layout)
    nonempty = tiles.any(axis=(2, 3))
    full = (tiles == valid).all(axis=(2, 3))
    rows = layout.tile_rows()
    stored = np.zeros((g.row_tiles, g.col_tiles), dtype=bool)
    stored[rows, layout.col_idx] = True
    assert np.array_equal(stored, nonempty), "stored tiles must be exactly the non-empty ones"
    assert np.array_equal(layout.full, full[rows, layout.col_idx]), "full flags must be exact"
    assert np.all(np.diff(g.join(rows, layout.col_idx)) > 0), "CSR must be sorted by (row, column)"
    # CSC is the transpose of CSR
    cols_t = np.repeat(np.arange(g.col_tiles), np.diff(layout.col_ptr))
    assert np.array_equal(np.sort(g.join(layout.row_idx, cols_t)), g.join(rows, layout.col_idx))
    assert np.array_equal(layout.row_idx, rows[layout.csc_to_csr])
    assert np.array_equal(cols_t, layout.col_idx[layout.csc_to_csr])
    assert np.array_equal(layout.full_t, layout.full[layout.csc_to_csr])


@PROPERTY
@given(spec_dicts(), tile_shapes())
def test_ir_matches_brute_force(case: tuple[dict, int], tile: tuple[int, int]) -> None:
    spec_dict, n = case
    expected = brute_force_mask(spec_dict, n)
    pattern = _compile(spec_dict, tile)
    dense = pattern.to_dense()
    assert dense.shape == expected.shape
    assert np.array_equal(dense, expected)
    per_head = expected if expected.ndim == 3 else expected[None]
    for h in range(pattern.heads):
        _check_layout(pattern.layout_of_head(h), per_head[h if pattern.per_head else 0])


@PROPERTY
@given(spec_dicts(max_n=150, per_head=False), tile_shapes())
def test_scipy_counts_and_empty_rows_match_brute_force(case: tuple[dict, int], tile: tuple[int, int]) -> None:
    spec_dict, n = case
    expected = brute_force_mask(spec_dict, n)
    layout = _compile(spec_dict, tile).layouts[0]
    assert np.array_equal(layout.to_scipy().toarray(), expected)
    assert layout.element_count() == int(expected.sum())
    assert np.array_equal(layout.empty_rows(), np.flatnonzero(~expected.any(axis=1)))


@settings(max_examples=40, deadline=None)
@given(spec_dicts(max_n=120), st.sampled_from([16, 32]))
def test_tile_shape_changes_layout_not_mask(case: tuple[dict, int], side: int) -> None:
    spec_dict, _ = case
    a = _compile(spec_dict, (side, side)).to_dense()
    b = _compile(spec_dict, (side * 2, side)).to_dense()
    assert np.array_equal(a, b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_dicts(max_n=150), tile_shapes())
def test_save_and_load_round_trip(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[dict, int], tile: tuple[int, int]
) -> None:
    spec_dict, _ = case
    pattern = _compile(spec_dict, tile)
    path = tmp_path_factory.mktemp("ir") / "pattern.npz"
    pattern.save(path)
    loaded = maskc.CompiledPattern.load(path)
    assert np.array_equal(loaded.to_dense(), pattern.to_dense())
    for before, after in zip(pattern.layouts, loaded.layouts):
        for name, array in before.arrays().items():
            assert np.array_equal(array, after.arrays()[name]), name
        assert [leaf.origin for leaf in before.rule.leaves()] == [leaf.origin for leaf in after.rule.leaves()]
