"""KV retention against brute force: for each step t, the keys j ≤ t that some query i ≥ t attends."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask

import maskc
from maskc.errors import MaskcWarning
from maskc.retention import pattern_retention

N = 160
#: Steps compared exactly: every band and stride below reaches back less than N − STEPS positions.
STEPS = 96


@st.composite
def small_primitives(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["window", "window", "block_window", "block_local", "stride", "global", "sink",
                                 "dense", "columns_every"]))  # fmt: skip
    if kind == "window":
        params = {"before": draw(st.integers(0, 20)), "after": draw(st.integers(0, 6))}
        if draw(st.booleans()):
            params["dilation"] = draw(st.integers(1, 3))
        return {"window": params}
    if kind == "block_window":
        return {"window": {"before": draw(st.integers(0, 2)), "after": draw(st.integers(0, 1)), "granularity": "block"}}
    if kind == "block_local":
        return {"block_local": {"size": draw(st.sampled_from([4, 8, 12]))}}
    if kind == "stride":
        return {"stride": {"every": draw(st.integers(2, 9))}}
    if kind == "global":
        tokens = draw(st.lists(st.integers(0, N - 1), min_size=1, max_size=3, unique=True))
        return {"global": {"tokens": tokens, "direction": draw(st.sampled_from(["both", "rows", "columns"]))}}
    if kind == "sink":
        return {"sink": {"count": draw(st.integers(1, 5))}}
    if kind == "columns_every":
        return {"global": {"every": 16, "offset": draw(st.integers(0, 15)), "direction": "columns"}}
    return {"dense": {}}


@st.composite
def small_specs(draw: st.DrawFn) -> dict:
    parts = draw(st.lists(small_primitives(), min_size=1, max_size=3))
    return {"name": "r", "block_size": 8, "causal": draw(st.booleans()), "pattern": parts}


def brute_force_keys(mask: np.ndarray, t: int) -> np.ndarray:
    return np.flatnonzero(mask[t:, : t + 1].any(axis=0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_specs())
def test_kept_keys_equal_brute_force(spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec.model_validate(spec), seq_len=N)
    retention = maskc.pattern_retention(pattern)
    assert retention.derived, retention.reason
    mask = brute_force_mask(spec, N)
    for t in range(STEPS):
        want = brute_force_keys(mask, t)
        np.testing.assert_array_equal(retention.keys(t), want, err_msg=f"step {t}: {retention}")
        keeps = retention.keeps(t, np.arange(t + 1))
        np.testing.assert_array_equal(np.flatnonzero(keeps), want)
        steady = t > max(max(retention.pinned, default=0) + retention.recent(), retention.rows_until)
        if retention.tokens() is not None and steady:
            assert len(want) <= retention.tokens()


@pytest.mark.parametrize(
    "name, tokens",
    [
        ("streaming_llm", [1024] * 32),
        ("mistral_swa", [4096] * 32),
        ("hybrid_local_global", [1024] * 5 + [None]),
        ("jamba", [0, 0, 0, 0, None, 0, 0, 0]),
        ("longformer", [258] * 12),
    ],
)
def test_catalogue_cache_sizes(name, tokens):
    assert maskc.kv_cache_tokens(f"specs/{name}.yaml") == tokens


def test_random_tables_are_not_derived_and_keep_everything():
    spec = maskc.Spec.model_validate({"name": "b", "block_size": 16, "pattern": {"random": {"per_row": 2}}})
    retention = pattern_retention(maskc.compile(spec, seq_len=128))
    assert not retention.derived and retention.tokens() is None
    assert list(retention.keys(40)) == list(range(41))


def test_explain_prints_the_cache_and_json_lists_it():
    text = run_cli("explain", "specs/streaming_llm.yaml")
    assert text.returncode == 0, text.stderr
    assert "KV cache     at decode: 4 sinks + 1020 recent = 1024 tokens per layer, constant in n" in text.stdout
    result = run_cli("explain", "specs/hybrid_local_global.yaml", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["kv_cache_tokens"] == [1024] * 5 + [None]


def test_periodic_columns_are_described_once_per_period() -> None:
    """The fixed pattern's c = 8 summary columns of every block of 128 are one phrase, not eight."""
    (fixed,) = maskc.kv_retention(Path(__file__).parents[1] / "specs" / "sparse_transformer_fixed.yaml", seq_len=1024)
    assert fixed.describe() == "128 recent + 8 global columns every 128 (grows with n)"
