"""`maskc explain`: complexity classes, closest catalogue pattern, and each warning a designer needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import ROOT, run_cli

import maskc
from maskc.explain import explain


def spec(pattern: object, *, causal: bool = False, **extra: object) -> maskc.Spec:
    return maskc.Spec.model_validate({"name": "t", "causal": causal, "pattern": pattern, **extra})


@pytest.mark.parametrize(
    ("pattern", "n", "complexity"),
    [
        ({"window": {"before": 16, "after": 16}}, 512, "O(n)"),
        ([{"window": {"size": 32}}, {"global": {"tokens": [0, 1]}}], 512, "O(n)"),
        ({"axial": {"width": 32}}, 1024, "O(n·√n)"),
        ({"dense": {}}, 256, "O(n²)"),
        ({"stride": {"every": 4}}, 512, "O(n²)"),
    ],
)
def test_complexity_class_from_growth(pattern: object, n: int, complexity: str) -> None:
    report = explain(spec(pattern), seq_len=n)
    assert report.growth is not None and report.growth.complexity == complexity
    assert report.growth.pairs == pytest.approx(report.densities.element * n * n)


def test_only_dilated_windows_never_mix_residues() -> None:
    dilated = {"window": {"before": 8, "after": 8, "dilation": 4}}
    lone = explain(spec(dilated), seq_len=256)
    assert any("dilation/stride 4" in w and "never exchange" in w for w in lone.warnings)
    assert lone.min_layers is None and any("no depth connects" in w for w in lone.warnings)
    mixed = explain(spec(dilated, heads=2, head_patterns=[{"heads": [1], "pattern": {"window": {"size": 4}}}]), 256)
    assert not any("dilation" in w for w in mixed.warnings) and mixed.min_layers is not None


def test_window_too_small_for_the_depth() -> None:
    window = spec({"window": {"before": 32, "after": 0}}, causal=True)
    shallow = explain(window, seq_len=1024, layers=8)
    assert shallow.min_layers == 32
    (warning,) = shallow.warnings
    assert "8 layers do not connect the sequence" in warning and "needs 32 layers" in warning
    assert explain(window, seq_len=1024, layers=32).warnings == []


def test_rows_without_keys_are_named() -> None:
    fixed = spec(
        {"block_local": {"size": 16}},
        causal=True,
        heads=2,
        head_patterns=[{"heads": [1], "pattern": {"global": {"every": 16, "offset": 15, "direction": "columns"}}}],
    )
    report = explain(fixed, seq_len=128)
    assert any(w.startswith("head 1: 15 query row(s) attend no key (0–14)") for w in report.warnings)


def test_closest_catalogue_pattern_of_a_copy(tmp_path: Path) -> None:
    copy = tmp_path / "mine.yaml"
    copy.write_text((ROOT / "specs" / "bigbird.yaml").read_text().replace("name: bigbird", "name: mine"))
    report = explain(maskc.load(copy), source=copy)
    assert report.similar[0].name == "bigbird" and report.similar[0].score == pytest.approx(1.0)
    itself = explain(maskc.load(ROOT / "specs" / "bigbird.yaml"), source=ROOT / "specs" / "bigbird.yaml")
    assert "bigbird" not in [s.name for s in itself.similar] and itself.similar[0].score < 1.0


def test_cli_explains_a_catalogue_spec() -> None:
    result = run_cli("explain", "specs/longformer_growing.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "made of" in out and "layers 9–12:" in out and "{window: {before: 512, after: 0}}" in out
    assert "complexity   O(n)" in out and "min_layers   21 at n = 4096" in out
    assert "12 layers do not connect the sequence" in out


@pytest.mark.parametrize(
    "text",
    [
        "seq_len: 64\npattern: {window: {size: 4}}\nlayers:\n  - {count: 2, mixer: recurrent}\n",
        "seq_len: 64\npattern: {window: {size: 4}}\nlayers:\n  - {count: 1, mixer: identity}\n",
        "seq_len: 64\npattern: {difference: [{window: {size: 4}}, {window: {size: 4}}]}\n",
    ],
    ids=["only-recurrent-layers", "only-identity-layers", "empty-pattern"],
)
def test_explain_without_active_pairs(tmp_path: Path, text: str) -> None:
    """No pair to count (no attention layer, or a pattern that holds nowhere): said, not divided by."""
    path = tmp_path / "none.yaml"
    path.write_text(text)
    result = run_cli("explain", str(path))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "density      no (i, j) pair is active: no attention FLOPs" in result.stdout
    assert "complexity   none: no active pairs at n = 64" in result.stdout
