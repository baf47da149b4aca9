"""`maskc show`: text and PNG pictures of the exact mask, which primitive lit each cell, and layer counts."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from clitools import ROOT, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matplotlib.image import imread
from specgen import brute_force_mask, spec_dicts

import maskc
from maskc.draw import NOTHING, layers_needed, lighting_leaves, rasterise, spec_panels
from maskc.errors import MaskcWarning
from maskc.verify import verify

SMALL = """\
name: small
seq_len: 40
causal: true
block_size: 8
heads: 2
pattern:
  - window: {before: 3, after: 0}
  - global: {tokens: [0, 5]}
head_patterns:
  - heads: [1]
    pattern: {difference: [{stride: {every: 4}}, {window: {before: 4, after: 0}}]}
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


@pytest.fixture(autouse=True)
def _quiet_empty_rows():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        yield


def _panels_of_text(lines: list[str], n: int) -> list[np.ndarray]:
    """The character grids printed under each `[...]` panel header."""
    grids, k = [], 0
    while k < len(lines):
        if lines[k].startswith("["):
            grids.append(np.array([list(line[5 : 5 + n]) for line in lines[k + 1 : k + 1 + n]]))
            k += n
        k += 1
    return grids


def test_text_mask_is_the_exact_mask(small: Path) -> None:
    result = run_cli("show", str(small), "--block-size", "16")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    want = brute_force_mask(maskc.load(small).to_data(), 40)
    grids = _panels_of_text(lines, 40)
    assert len(grids) == 2
    for head, grid in enumerate(grids):
        assert np.array_equal(~np.isin(grid, [".", " "]), want[head])
    legend = "\n".join(lines[-6:])
    assert "window before=3 after=0" in legend and "stride every=4" in legend
    assert "global tokens=[0, 5] (rows)" in legend
    assert "window before=4" not in legend, "a difference's subtracted side lights nothing"


def test_text_refuses_wide_masks(small: Path) -> None:
    result = run_cli("show", str(small), "--seq-len", "200")
    assert result.returncode == 2
    assert "too wide to print as text" in result.stderr and "--png" in result.stderr
    assert "Traceback" not in result.stderr


def _static_spec(spec_dict: dict) -> bool:
    return "cluster" not in str(spec_dict)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=spec_dicts(max_n=70), tile=st.sampled_from([16, 32]), scale=st.sampled_from([1, 2, 4, 32]))
def test_cells_light_exactly_where_pairs_are_active(case: tuple[dict, int], tile: int, scale: int) -> None:
    """Each cell: lit iff some pair in its region is active; its label is the first lighting leaf that holds."""
    spec_dict, n = case
    spec = maskc.Spec.model_validate(spec_dict)
    want = brute_force_mask(spec_dict, n)
    per_head = want if want.ndim == 3 else want[None]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    for panel in spec_panels(spec, n, tile):
        leaves = lighting_leaves(panel.rule)
        image = rasterise(panel, leaves, scale)
        mask = per_head[panel.heads[0]] if want.ndim == 3 else per_head[0]
        side = -(-n // scale)
        padded = np.zeros((side * scale, side * scale), dtype=bool)
        padded[:n, :n] = mask
        assert np.array_equal(image.labels != NOTHING, padded.reshape(side, scale, side, scale).any(axis=(1, 3)))
        if scale == 1:
            first = np.full((n, n), NOTHING, dtype=np.int64)
            for k in reversed(range(len(leaves))):
                first[np.broadcast_to(leaves[k].mask(i, j), (n, n)) & mask] = k
            assert np.array_equal(image.labels, first)


def test_png_is_a_picture_with_one_panel_per_pattern(tmp_path: Path) -> None:
    out = tmp_path / "fixed.png"
    result = run_cli("show", "specs/sparse_transformer_fixed_heads.yaml", "--seq-len", "1024", "--png", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 panel(s)" in result.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(out)
    assert pixels.ndim == 3 and pixels.shape[0] > 500 and pixels.shape[1] > 1000
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 8, "block-local and eight summary columns in their own colours"


def test_layer_counts_of_a_causal_window() -> None:
    """A causal window of w keys back: key j reaches query i in ⌈(i − j) / w⌉ layers."""
    spec = maskc.Spec(name="w", causal=True, pattern=maskc.Window(before=5, after=0))
    need = layers_needed(spec, 60, 20)
    i, j = np.arange(60)[:, None], np.arange(60)[None, :]
    assert np.array_equal(need, np.where(j <= i, -(-(i - j) // 5), -1))
    partial = layers_needed(spec, 60, 3)
    assert np.array_equal(partial, np.where((j <= i) & (i - j <= 15), -(-(i - j) // 5), -1))


@pytest.mark.parametrize("name", ["longformer_growing", "bigbird", "dilated_window", "jamba"])
def test_layer_counts_agree_with_verify(name: str) -> None:
    spec = maskc.load(ROOT / "specs" / f"{name}.yaml")
    need = layers_needed(spec, 300, 40)
    if spec.causal:
        need = need[np.tril_indices(300)]
    report = verify(spec, layers=40, seq_len=300)
    assert report.min_layers == (None if (need < 0).any() else int(need.max()))


def test_reach_text_and_png(small: Path, tmp_path: Path) -> None:
    result = run_cli("show", str(small), "--reach", "2", "--seq-len", "24")
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[1:25]
    assert rows[0].rstrip().endswith("0") and rows[23][5:6] == "1", "query 23 reads the global token 0 in one layer"
    out = tmp_path / "reach.png"
    result = run_cli("show", "specs/longformer_growing.yaml", "--seq-len", "512", "--reach", "4", "--png", str(out))
    assert result.returncode == 0, result.stderr
    assert imread(out).shape[0] > 500
    too_big = run_cli("show", "specs/longformer.yaml", "--reach", "2", "--png", str(out), "--seq-len", "4096")
    assert too_big.returncode == 2 and "limit of 2048" in too_big.stderr
