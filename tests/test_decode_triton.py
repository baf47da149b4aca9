"""The Triton decoding kernels (split-KV, merged by log-sum-exp) under TRITON_INTERPRET=1.

Each step of decoding over a maskc.KVCache is compared with float64 attention of the same queries
over every key of the sequence (the CPU backend's rectangular path), for a rolling buffer (sinks +
window), a growing cache (dense causal), per-head patterns, GQA, several queries per step and
sequences of different lengths.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)

import maskc
from maskc.backends.triton import decode
from maskc.errors import MaskcWarning

SPECS = {
    "sinks+window": {"causal": True, "pattern": [{"sink": {"count": 3}}, {"window": {"before": 20}}]},
    "per-head": {
        "causal": True,
        "heads": 4,
        "pattern": {"window": {"before": 9}},
        "head_patterns": [{"heads": [1, 2], "pattern": [{"global": {"tokens": [2]}}, {"window": {"before": 3}}]}],
    },
    "dense-causal": {"causal": True, "pattern": {"dense": {}}},
}


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """Several shares per sequence even at these sizes, so the merge has work to do."""
    monkeypatch.setattr(decode, "BLOCK_N", 16)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("step", [1, 3])
def test_decoding_matches_full_attention(name, step):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec(name=name, **SPECS[name]), seq_len=96, block_size=16, heads=4)
    gen = torch.Generator().manual_seed(step)
    n, batch = 70, 2
    q = torch.randn(batch, 4, n, 16, generator=gen)
    k, v = (torch.randn(batch, 2, n, 16, generator=gen) for _ in range(2))
    lengths = [40, 31]
    cache = maskc.KVCache(pattern, batch=batch, kv_heads=2, head_dim=16, step_tokens=step)
    cache.append(k[:, :, :40], v[:, :, :40], counts=lengths)
    for _ in range(4):
        pick = [slice(x, x + step) for x in lengths]
        cache.append(*(torch.stack([x[b, :, pick[b]] for b in range(batch)]) for x in (k, v)))
        lengths = [x + step for x in lengths]
        step_q = torch.stack([q[b, :, lengths[b] - step : lengths[b]] for b in range(batch)])
        got, lse = cache.attention(step_q, backend="triton", return_lse=True)
        for b in range(batch):
            keys = [x[b : b + 1, :, : lengths[b]].double() for x in (k, v)]
            want, want_lse = maskc.attention(step_q[b : b + 1].double(), *keys, pattern, "cpu", return_lse=True)
            assert _relative(got[b : b + 1], want) < 1e-4
            assert _relative(lse[b : b + 1], want_lse) < 1e-4
    if cache.rolling:
        assert cache.slots == maskc.pattern_retention(pattern).tokens() + step - 1
