"""maskc.tensor_memo: what one read of a tensor learnt, kept for that very tensor while it is unchanged."""

from __future__ import annotations

import gc

import torch

import maskc
from maskc.tensor_memo import LastTensor


def test_a_value_is_kept_for_the_same_unchanged_tensor_and_key() -> None:
    memo, ids = LastTensor(), torch.zeros(2, 8, dtype=torch.long)
    memo.put(ids, "checked", key=(2, 8))
    assert memo.get(ids, key=(2, 8)) == "checked"
    assert memo.get(ids, key=(1, 8)) is None  # another key
    assert memo.get(ids.clone(), key=(2, 8)) is None  # another tensor with the same values
    ids[0, 3] = 1  # an in-place change moves the version
    assert memo.get(ids, key=(2, 8)) is None


def test_a_freed_tensor_drops_the_value() -> None:
    memo = LastTensor()
    first, second = torch.zeros(3), torch.ones(2)
    memo.put(first, "first")
    memo.put(second, "second")
    del first
    gc.collect()
    assert memo.held() == "second"  # an earlier tensor's death leaves the newer value
    del second
    gc.collect()
    assert memo.held() is None


def test_inference_mode_tensors_are_never_kept() -> None:
    """They have no version counter: nothing could tell a later change, so nothing is remembered."""
    memo = LastTensor()
    with torch.inference_mode():
        ids = torch.zeros(2, 8, dtype=torch.long)
        memo.put(ids, "checked")
        assert memo.get(ids) is None


def test_documents_checked_once_under_inference_mode(monkeypatch) -> None:
    """The "once" order check of documents works on tensors made under torch.inference_mode (serving)."""
    monkeypatch.setenv("MASKC_CHECK_DOCUMENTS", "once")
    spec = maskc.Spec(name="docs", causal=True, pattern={"document": {}})
    pattern = maskc.compile(spec, seq_len=32, block_size=16)
    with torch.inference_mode():
        q = torch.randn(1, 1, 32, 8, dtype=torch.float64)
        documents = torch.as_tensor(maskc.ids_from_lengths([12, 20]))[None]
        out = maskc.attention(q, q, q, pattern, backend="cpu", documents=documents)
        again = maskc.attention(q, q, q, pattern, backend="cpu", documents=documents)
    assert torch.equal(out, again)
