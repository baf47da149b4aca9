"""maskc.KVCache: decoding over the cache equals attention over every key, with the rule on true positions."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

import maskc
from maskc.errors import BackendError, MaskcWarning

SPECS = {
    "sinks+window": {"causal": True, "pattern": [{"sink": {"count": 3}}, {"window": {"before": 6}}]},
    "block-window+global": {
        "causal": True,
        "block_size": 4,
        "pattern": [{"window": {"before": 1, "granularity": "block"}}, {"global": {"tokens": [9]}}],
    },
    "per-head": {
        "causal": True,
        "heads": 2,
        "pattern": {"window": {"before": 4}},
        "head_patterns": [{"heads": [1], "pattern": [{"sink": {"count": 2}}, {"window": {"before": 2}}]}],
    },
    "dense-causal": {"causal": True, "pattern": {"dense": {}}},
    "stride": {"causal": True, "pattern": [{"stride": {"every": 5}}, {"window": {"before": 3}}]},
}


def _pattern(name: str, n: int = 48) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec(name=name, **SPECS[name]), seq_len=n, block_size=16, heads=2)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("prompt, step", [(1, 1), (13, 1), (5, 3)])
def test_decoding_equals_full_attention(name, prompt, step):
    pattern = _pattern(name)
    gen = torch.Generator().manual_seed(len(name) + prompt)
    n, batch = 26, 2
    q = torch.randn(batch, 2, n, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(batch, 1, n, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    cache = maskc.KVCache(pattern, batch=batch, kv_heads=1, head_dim=8, dtype=torch.float64, step_tokens=step)
    cache.append(k[:, :, :prompt], v[:, :, :prompt])
    done = prompt
    while done + step <= n:
        cache.append(k[:, :, done : done + step], v[:, :, done : done + step], positions=done)
        done += step
        got = cache.attention(q[:, :, done - step : done], backend="cpu")
        want = maskc.attention(q[:, :, done - step : done], k[:, :, :done], v[:, :, :done], pattern, "cpu")
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if cache.rolling:
        assert cache.slots == maskc.pattern_retention(pattern).tokens() + step - 1


def test_rolling_buffer_holds_sinks_and_window():
    pattern = _pattern("sinks+window")
    cache = maskc.KVCache(pattern, batch=1, kv_heads=1, head_dim=4)
    cache.append(torch.randn(1, 1, 30, 4), torch.randn(1, 1, 30, 4))
    assert cache.slots == 3 + 7
    assert sorted(cache.positions[0].tolist()) == [0, 1, 2, *range(23, 30)]


def test_sequences_of_different_lengths():
    """Right-padded appends with counts: each sequence decodes at its own positions."""
    pattern = _pattern("sinks+window")
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, 30, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 1, 30, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    lengths = [17, 9]
    cache = maskc.KVCache(pattern, batch=2, kv_heads=1, head_dim=8, dtype=torch.float64)
    cache.append(k[:, :, :17], v[:, :, :17], counts=lengths)
    for _ in range(5):
        step_k = torch.stack([k[b, :, lengths[b] : lengths[b] + 1] for b in range(2)])
        step_v = torch.stack([v[b, :, lengths[b] : lengths[b] + 1] for b in range(2)])
        cache.append(step_k, step_v, positions=torch.tensor(lengths))
        lengths = [x + 1 for x in lengths]
        step_q = torch.stack([q[b, :, lengths[b] - 1 : lengths[b]] for b in range(2)])
        got = cache.attention(step_q, backend="cpu")
        for b in range(2):
            want = maskc.attention(step_q[b : b + 1], k[b : b + 1, :, : lengths[b]], v[b : b + 1, :, : lengths[b]],
                                   pattern, "cpu")  # fmt: skip
            torch.testing.assert_close(got[b : b + 1], want, rtol=1e-12, atol=1e-12)


def test_out_of_order_positions_are_refused():
    cache = maskc.KVCache(_pattern("sinks+window"), batch=1, kv_heads=1, head_dim=4)
    cache.append(torch.zeros(1, 1, 5, 4), torch.zeros(1, 1, 5, 4))
    words = "sequence 0 holds positions 0..4, so its next token is position 5; got position 7"
    with pytest.raises(BackendError, match=re.escape(words)):
        cache.append(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4), positions=7)
    with pytest.raises(BackendError, match="compiled for 48 positions"):
        cache.append(torch.zeros(1, 1, 44, 4), torch.zeros(1, 1, 44, 4))
    with pytest.raises(BackendError, match="at most step_tokens=1 queries"):
        cache.attention(torch.zeros(1, 2, 2, 4))
    wide = maskc.KVCache(_pattern("sinks+window"), batch=1, kv_heads=1, head_dim=4, step_tokens=8)
    wide.append(torch.zeros(1, 1, 5, 4), torch.zeros(1, 1, 5, 4))
    with pytest.raises(BackendError, match="holds only 5 positions"):
        wide.attention(torch.zeros(1, 2, 6, 4))


def test_sparse_attention_module_prefill_then_decode():
    """maskc.nn.SparseAttention: without a cache it is maskc.attention; with one, prompt then steps equal it."""
    spec = maskc.Spec(name="sinks+window", **SPECS["sinks+window"])
    module = maskc.nn.SparseAttention(spec, seq_len=48, backend="cpu")
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, 30, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(1, 1, 30, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    full = maskc.attention(q, k, v, module.pattern, "cpu")
    torch.testing.assert_close(module(q, k, v), full)
    cache = module.new_cache(batch=1, kv_heads=1, head_dim=8, dtype=torch.float64)
    torch.testing.assert_close(module(q[:, :, :20], k[:, :, :20], v[:, :, :20], cache=cache), full[:, :, :20])
    for t in range(20, 30):
        step = module(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], cache=cache)
        torch.testing.assert_close(step, full[:, :, t : t + 1])
    assert cache.slots == 3 + 7
    with pytest.raises(BackendError, match="exceed the cache's step_tokens=1"):
        module(q[:, :, :2], k[:, :, :2], v[:, :, :2], cache=cache)


def test_sparse_attention_module_takes_packed_documents():
    """maskc.nn.SparseAttention passes `documents` to maskc.attention, which checks them as usual; they go
    with full-length calls only."""
    spec = maskc.Spec(name="documents", causal=True, pattern={"document": {}})
    module = maskc.nn.SparseAttention(spec, seq_len=24, backend="cpu")
    gen = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, 2, 24, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    documents = torch.as_tensor(maskc.ids_from_lengths([10, 14]))[None]
    want = maskc.attention(q, k, v, module.pattern, "cpu", documents=documents)
    torch.testing.assert_close(module(q, k, v, documents=documents), want)
    # a document's first query sees only itself: the documents reached the call
    torch.testing.assert_close(want[:, :, 10], v[:, :, 10])
    with pytest.raises(maskc.DocumentsError, match="pass documents="):
        module(q, k, v)
    with pytest.raises(BackendError, match=r"parts decided at run time \(same document\)"):
        module.new_cache(batch=1, kv_heads=2, head_dim=8, dtype=torch.float64)
    static = maskc.nn.SparseAttention(maskc.Spec(name="sinks+window", **SPECS["sinks+window"]), seq_len=24)
    cache = static.new_cache(batch=1, kv_heads=2, head_dim=8, dtype=torch.float64)
    with pytest.raises(BackendError, match="documents go with a full-length call"):
        static(q, k, v, cache=cache, documents=documents)
    with pytest.raises(BackendError, match="documents go with a full-length call"):
        module(q, k, v, attention_mask=torch.ones(1, 24), documents=documents)
