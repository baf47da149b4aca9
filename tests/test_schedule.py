"""Schedules never change the mask: the passes' pairs, mapped back to original positions, are the
mask exactly and disjoint, and every pass's tables are exact in its own coordinates."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from clitools import run_cli
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, lowering_spec_dicts, spec_dicts

import maskc
from maskc.errors import MaskcError, MaskcWarning
from maskc.schedule import Pass, Schedule, plan_schedule, schedule_of
from maskc.schedule.decompose import disjuncts

PROPERTY = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _compile(spec_dict: dict, schedule: str, tile: tuple[int, int] | None = None) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(spec_dict), block_size=tile, schedule=schedule)


def _check_tables(p: Pass) -> None:
    """CSR sorted, CSC its transpose, every stored tile non-empty, full flags exact."""
    rows = p.tile_rows()
    keys = rows * p.col_tiles + p.col_idx
    assert np.all(np.diff(keys) > 0), "CSR must be sorted by (row, column)"
    cols_t = np.repeat(np.arange(p.col_tiles), np.diff(p.col_ptr))
    assert np.array_equal(p.row_idx, rows[p.csc_to_csr])
    assert np.array_equal(cols_t, p.col_idx[p.csc_to_csr])
    assert np.array_equal(p.full_t, p.full[p.csc_to_csr])
    full_view = p.tile_masks()
    exact = Pass(**{**p.__dict__, "full": np.zeros_like(p.full), "_tile_rows": None}).tile_masks()
    assert exact.any(axis=(1, 2)).all(), "a stored tile must hold a pair"
    assert np.array_equal(full_view, exact), "full flags must be exact"
    assert p.dense_mask().sum() == exact.sum(), "the pass's dense mask is its stored tiles' elements"


def _check_schedule(schedule: Schedule, expected: np.ndarray) -> None:
    n = expected.shape[0]
    seen = np.zeros((n, n), dtype=np.int32)
    for p in schedule.passes:
        _check_tables(p)
        qi, kj = p.pairs()
        np.add.at(seen, (qi, kj), 1)
    assert seen.max(initial=0) <= 1, "passes must be disjoint"
    assert np.array_equal(seen == 1, expected), "the passes' union must be the mask exactly"
    assert schedule.kernel_work() == sum(p.tile_area() for p in schedule.passes)


@PROPERTY
@given(lowering_spec_dicts(), st.sampled_from(["auto", "split"]))
def test_passes_cover_the_mask_exactly(case: tuple[dict, int], mode: str) -> None:
    spec_dict, n = case
    expected = brute_force_mask(spec_dict, n)
    pattern = _compile(spec_dict, mode)
    (schedule,) = schedule_of(pattern)
    _check_schedule(schedule, expected)
    assert np.array_equal(pattern.to_dense(), expected), "the schedule must not change the IR's mask"


#: Two residue disjuncts of one modulus with different class offsets share a pass, whose candidate
#: tiles must cover both (the pair (13, 15) was lost when the last disjunct's offsets were kept).
_RESIDUE_HULL = {
    "name": "residue_hull", "seq_len": 17, "block_size": 1, "causal": False,
    "pattern": {"intersect": [
        {"window": {"size": 2, "dilation": 2, "granularity": "block"}},
        {"union": [{"dense": {}}, {"block_local": {"size": 1}}]},
    ]},
}  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_dicts(max_n=160), st.sampled_from([(16, 16), (32, 16), (16, 64), (128, 128), (128, 32)]))
@example((_RESIDUE_HULL, 17), (16, 16))
def test_any_spec_splits_exactly(case: tuple[dict, int], tile: tuple[int, int]) -> None:
    """Every primitive and combinator, per-head patterns, rectangular tiles, forced splits."""
    spec_dict, n = case
    expected = brute_force_mask(spec_dict, n)
    pattern = _compile(spec_dict, "split", tile)
    for head, k in enumerate(pattern.head_layout):
        want = expected[head] if expected.ndim == 3 else expected
        _check_schedule(schedule_of(pattern)[k], want)


def test_single_is_the_ir_layout() -> None:
    pattern = maskc.compile("specs/longformer.yaml", seq_len=1024)
    (schedule,) = schedule_of(pattern)
    (only,) = schedule.passes
    assert schedule.single and only.lowering == "identity"
    assert np.array_equal(only.col_idx, pattern.layouts[0].col_idx)
    assert schedule.kernel_work() == schedule.single_work


@pytest.mark.parametrize(
    ("spec", "n", "lowerings"),
    [
        ("sparse_transformer_strided", 8192, {"identity", "residue"}),
        ("sparse_transformer_fixed", 8192, {"identity", "gathered keys"}),
        ("axial_64x64", 4096, {"identity", "residue"}),
        ("streaming_llm", 8192, {"identity"}),
        ("longformer", 8192, {"identity"}),
        ("mistral_swa", 8192, {"identity"}),
    ],
)
def test_cost_model_picks_the_lowering(spec: str, n: int, lowerings: set[str]) -> None:
    pattern = maskc.compile(f"specs/{spec}.yaml", seq_len=n, schedule="auto")
    (schedule,) = schedule_of(pattern)
    assert {p.lowering for p in schedule.passes} == lowerings
    assert schedule.predicted_work <= schedule.single_work
    if lowerings != {"identity"}:
        assert schedule.predicted_work < schedule.single_work


def test_strided_residue_pass_is_contiguous() -> None:
    """Under the residue order the stride's pairs are a band inside each class: few partial tiles."""
    pattern = maskc.compile("specs/sparse_transformer_strided.yaml", seq_len=65536, schedule="auto")
    residue = next(p for p in schedule_of(pattern)[0].passes if p.lowering == "residue")
    assert residue.modulus == 256  # the spec's stride is sqrt(n)
    assert residue.tile_area() < 1.5 * len(residue.pairs()[0])


def test_disjuncts_distribute_intersections() -> None:
    pattern = maskc.compile("specs/sparse_transformer_strided.yaml", seq_len=1024)
    parts = disjuncts(pattern.layouts[0].rule)
    assert len(parts) == 2
    i, j = np.meshgrid(np.arange(1024), np.arange(1024), indexing="ij")
    union = np.logical_or.reduce([p.mask(i, j) for p in parts])
    assert np.array_equal(union, pattern.layouts[0].rule.mask(i, j))


def test_bad_schedule_mode_is_named() -> None:
    with pytest.raises(MaskcError, match="schedule must be one of"):
        maskc.compile("specs/longformer.yaml", seq_len=256, schedule="fast")
    with pytest.raises(MaskcError, match="schedule must be one of"):
        plan_schedule(maskc.compile("specs/longformer.yaml", seq_len=256).layouts[0], "fast")


def test_compile_prints_and_reports_the_passes() -> None:
    text = run_cli("compile", "specs/sparse_transformer_strided.yaml", "--seq-len", "16384")
    assert text.returncode == 0, text.stderr
    assert "pass 0  residue mod 128" in text.stdout and "identity" in text.stdout
    data = json.loads(
        run_cli("compile", "specs/sparse_transformer_strided.yaml", "--seq-len", "16384", "--json").stdout
    )
    pattern = maskc.compile("specs/sparse_transformer_strided.yaml", seq_len=16384, schedule="auto")
    assert data["kernel_work"] == schedule_of(pattern)[0].kernel_work()
    assert [p["lowering"] for p in data["passes"]] == ["residue", "identity"]
    assert sum(p["kernel_work"] for p in data["passes"]) == data["kernel_work"]
    single = json.loads(
        run_cli(
            "compile", "specs/sparse_transformer_strided.yaml", "--seq-len", "16384", "--json", "--schedule", "single"
        ).stdout
    )
    assert [p["lowering"] for p in single["passes"]] == ["identity"]
    assert single["kernel_work"] == round(single["tile_density"] * 16384**2)


def test_explain_says_why() -> None:
    text = run_cli("explain", "specs/sparse_transformer_fixed.yaml", "--seq-len", "4096").stdout
    assert "considered gathered keys" in text and ": taken" in text
    assert "pass 0: gathered keys: 256 key positions hold every pair" in text
    text = run_cli("explain", "specs/streaming_llm.yaml", "--seq-len", "4096").stdout
    assert "considered gathered keys" in text and "kept in token order" in text


def test_a_pattern_with_nothing_to_lower_may_take_smaller_tiles() -> None:
    """A causal window of 182 on 128-wide tiles computes about twice its pairs; token order on 64-wide
    tiles, predicted cheaper, is taken (its tables exact), unless that layout would be too large."""
    spec = {"causal": True, "seq_len": 4096, "block_size": 128, "pattern": {"window": {"before": 181, "after": 0}}}
    pattern = _compile(spec, "auto")
    (schedule,) = schedule_of(pattern)
    (only,) = schedule.passes
    assert (only.lowering, only.block_m, only.block_n) == ("identity", 64, 64)
    assert schedule.kernel_work() < schedule.single_work
    _check_tables(only)
    assert np.array_equal(pattern.to_dense(), _compile(spec, "single").to_dense())


def test_smaller_tiles_are_not_built_past_their_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from maskc.schedule import plan

    monkeypatch.setattr(plan, "MAX_RETILED_TILES", 10)
    spec = {"causal": True, "seq_len": 4096, "block_size": 128, "pattern": {"window": {"before": 181, "after": 0}}}
    schedule = plan.plan_schedule(_compile(spec, "single").layouts[0])
    assert schedule.single and schedule.considered == ("no part asks for another order",)


def test_smaller_pass_tiles_are_left_out_where_their_grid_would_be_too_large() -> None:
    """At n = 2**28 on 128-wide tiles, 64-wide tiles would exceed MAX_TILE_ROWS: the planner keeps to
    the spec's tiles instead of failing on a grid of its own choosing."""
    spec = {
        "seq_len": 1 << 28,
        "block_size": 128,
        "pattern": {"intersect": [{"window": {"size": 8}}, {"global": {"first": 60000, "direction": "rows"}}]},
    }
    (schedule,) = schedule_of(_compile(spec, "auto"))
    assert all((p.block_m, p.block_n) == (128, 128) for p in schedule.passes)


def test_schedule_reasons_name_heads_as_runs() -> None:
    """Thousands of heads print as runs ("heads 0, 3–63"), not as a list of every head."""
    from maskc.schedule import schedule_reasons

    spec = {
        "seq_len": 1024,
        "heads": 64,
        "pattern": {"window": {"size": 16}},
        "head_patterns": [{"heads": [1, 2], "pattern": {"window": {"size": 32}}}],
    }
    pattern = _compile(spec, "auto")
    lines = schedule_reasons(pattern, schedule_of(pattern))
    assert [line.split(":")[0] for line in lines if line.startswith("heads")] == ["heads 0, 3–63", "heads 1–2"]
