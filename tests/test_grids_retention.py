"""The keys decoding keeps on grids (causal-in-time video): at every step t, exactly the keys j ≤ t
that some query i ≥ t attends, against the brute force of the definitions."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, grid_spec_dicts

import maskc
from maskc.errors import MaskcWarning
from maskc.retention import pattern_retention

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _retention(data: dict) -> maskc.Retention:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return pattern_retention(maskc.compile(maskc.Spec.model_validate(data), block_size=16))


def _needed(mask: np.ndarray, t: int) -> np.ndarray:
    """Brute force: the keys j ≤ t some query i ≥ t attends."""
    return np.flatnonzero(mask[t:, : t + 1].any(axis=0))


@PROPERTY
@given(grid_spec_dicts(max_side=10))
def test_grid_retention_keeps_what_later_queries_attend(case: tuple[dict, int]) -> None:
    data, n = case
    mask = brute_force_mask(data, n)
    retention = _retention(data)
    alone = isinstance(data["pattern"], dict) and "intersect" not in data["pattern"]
    peak = 0
    for t in range(n):
        needed, kept = _needed(mask, t), retention.keys(t)
        assert set(needed) <= set(kept), f"step {t} drops a key a later query attends"
        assert np.array_equal(retention.keeps(t, np.arange(t + 1)), np.isin(np.arange(t + 1), kept))
        if alone and not retention.keeps_everything:
            assert np.array_equal(kept, needed), f"step {t} keeps more than a later query attends"
        peak = max(peak, len(needed))
    if alone and not retention.keeps_everything:
        assert retention.tokens() == peak


@given(st.sampled_from([[1, 2, 4], [2, 2, 2]]), st.integers(2, 4))
@settings(max_examples=10, deadline=None)
def test_causal_video_keeps_the_last_frames(tiles: list[int], kt: int) -> None:
    """Causal in time with kernel kt: the current frame and the kt − 2 before it whole, and part
    of the frame before those; the figure is the brute force's peak, in either storage order."""
    for order in ("row_major", {"tiles": tiles}):
        data = {
            "name": "video",
            "grid": {"shape": [6, 4, 8], "order": order},
            "pattern": {"neighborhood": {"kernel": [kt, 3, 3], "causal": [True, False, False], "text": "none"}},
        }
        mask = brute_force_mask(data, 6 * 32)
        retention = _retention(data)
        assert retention.tokens() == max(len(_needed(mask, t)) for t in range(6 * 32))
        if order == "row_major":
            t = 4 * 32 + 10  # frame 4, cell 10
            kept = retention.keys(t)
            assert set(range((4 - kt + 2) * 32, t + 1)) <= set(kept)
            assert kept.min() >= (4 - kt + 1) * 32
        assert "at most" in retention.describe(" per layer")


def test_kv_cache_tokens_reports_grid_layers() -> None:
    data = {
        "name": "video",
        "grid": {"shape": [8, 6, 6]},
        "pattern": {"neighborhood": {"kernel": [3, 3, 3], "causal": [True, False, False], "text": "none"}},
    }
    spec = maskc.Spec.model_validate(data)
    (tokens,) = maskc.kv_cache_tokens(spec)
    mask = brute_force_mask(data, 8 * 36)
    assert tokens == max(len(_needed(mask, t)) for t in range(8 * 36))
    assert 36 < tokens < 3 * 36
