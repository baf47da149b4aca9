"""`maskc catalogue`: figures checked against brute force, the markdown block, and that the README's is current."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from clitools import ROOT, run_cli
from specgen import brute_force_mask

import maskc
from maskc.catalogue import (
    README_END,
    README_START,
    catalogue,
    catalogue_specs,
    markdown_table,
    readme_block,
    replace_block,
)
from maskc.draw import layers_needed
from maskc.errors import MaskcError, MaskcWarning

WINDOW = """\
# test spec (2024)
name: window
description: "window 8 each side + global token 0"
seq_len: 200
pattern:
  - window: {before: 8, after: 8}
  - global: {tokens: [0]}
"""
HYBRID = """\
# test spec (2024)
name: hybrid
description: "causal window 4, dense every 3rd layer"
seq_len: 200
causal: true
pattern: {window: {before: 4, after: 0}}
layers:
  - {count: 2}
  - {count: 1, pattern: {dense: {}}}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "window.yaml").write_text(WINDOW)
    (specs / "hybrid.yaml").write_text(HYBRID)
    return specs


def test_rows_match_brute_force(folder: Path) -> None:
    rows = {row.name: row for row in catalogue(folder)}
    window = maskc.load(folder / "window.yaml")
    mask = brute_force_mask(window.to_data(), 200)
    assert rows["window"].densities.element == pytest.approx(mask.mean(), abs=1e-15)
    assert rows["window"].min_layers == int(layers_needed(window, 200, 50).max())
    hybrid = maskc.load(folder / "hybrid.yaml")
    per_layer = [brute_force_mask(layer.to_data(), 200).mean() for _, layer in hybrid.layer_schedule()]
    assert rows["hybrid"].densities.element == pytest.approx((2 * per_layer[0] + per_layer[1]) / 3, abs=1e-15)
    assert rows["hybrid"].depth == 3 and rows["hybrid"].min_layers == 3, "the dense third layer connects everything"
    assert rows["window"].cells()[3] == "—" and rows["window"].source.startswith("window 8")


def test_markdown_block_and_replacement(folder: Path) -> None:
    block = markdown_table(catalogue(folder, seq_len=128))
    assert block.startswith(README_START) and block.endswith(README_END)
    assert "| hybrid | causal window 4, dense every 3rd layer | 128 | 3 |" in block
    text = f"intro\n{README_START}\nold\n{README_END}\noutro\n"
    updated = replace_block(text, block)
    assert updated.startswith("intro\n") and updated.endswith("\noutro\n") and readme_block(updated) == block
    with pytest.raises(MaskcError, match="no catalogue block"):
        replace_block("no markers here", block)


def test_cli_update_then_check(folder: Path, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"# page\n{README_START}\nstale\n{README_END}\n")
    stale = run_cli("catalogue", "--dir", str(folder), "--check", str(page))
    assert stale.returncode == 1 and "out of date" in stale.stdout
    assert run_cli("catalogue", "--dir", str(folder), "--update", str(page)).returncode == 0
    fresh = run_cli("catalogue", "--dir", str(folder), "--check", str(page))
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    table = run_cli("catalogue", "--dir", str(folder), "--seq-len", "64")
    assert table.returncode == 0 and "window 8 each side" in table.stdout and "min_layers" in table.stdout
    assert run_cli("catalogue", "--dir", str(tmp_path / "nowhere")).returncode == 2


def test_published_catalogue_is_current() -> None:
    """The generated block in README.md equals what the code computes today."""
    block = readme_block((ROOT / "README.md").read_text())
    assert block is not None, "README.md does not carry the catalogue block"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        current = markdown_table(catalogue())
    assert block == current, "README.md is stale: run `maskc catalogue --update README.md`"
    assert all(f"| {path.stem} |" in current for path, _ in catalogue_specs())
    assert np.all([row.count("|") == 9 for row in current.splitlines() if row.startswith("| ")])
