"""Padded batches (maskc.padding): each row's tokens are a contiguous run of columns, positions counted
from the row's first token.

`padded_attention` against float64 dense attention computed row by row on the brute-force mask at
each row's own positions, over the row's real keys only: prefill (queries = keys), a decoding step
(one query, keys from column 0) and a sliding call (keys from a later column), with left, right,
both-sided and no padding and empty rows; outputs and gradients, on the CPU backend and the Triton
kernels (interpreter). And the refusals: values other than 0/1, holes, non-causal specs, dropped keys.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)
from specgen import brute_force_mask

import maskc
from maskc.errors import BackendError
from maskc.padding import PaddedBatch, padded_attention

N = 64
SPECS = {
    "window-sinks": {
        "name": "window-sinks",
        "causal": True,
        "pattern": [{"window": {"before": 9}}, {"sink": {"count": 2}}],
    },
    "dense-causal": {"name": "dense-causal", "causal": True, "pattern": {"dense": {}}},
    "window": {"name": "window", "causal": True, "pattern": {"window": {"before": 7, "after": 0}}},
}


def _pattern(name: str) -> maskc.CompiledPattern:
    return maskc.compile(maskc.Spec.model_validate(SPECS[name]), seq_len=N, block_size=(16, 16), heads=4)


def _reference(q, k, v, name, first, count, q_start, k_start):
    """float64 (B, H, m, Dv): row b attends its real key columns, the rule on positions column − first[b]."""
    mask = torch.as_tensor(brute_force_mask(SPECS[name], N))
    group = q.shape[1] // k.shape[1]
    k, v = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
    out = torch.zeros(q.shape[:3] + (v.shape[-1],), dtype=torch.float64)
    scale = q.shape[-1] ** -0.5
    for b in range(q.shape[0]):
        real = range(first[b], first[b] + count[b])
        keys = [c for c in range(k_start, k_start + k.shape[2]) if c in real]
        for a in range(q.shape[2]):
            if q_start + a not in real or not keys:
                continue
            allowed = torch.tensor([bool(mask[q_start + a - first[b], c - first[b]]) for c in keys])
            if not allowed.any():
                continue
            index = [c - k_start for c in keys]
            scores = torch.einsum("hd,hld->hl", q[b, :, a].double(), k[b, :, index]) * scale
            probs = torch.softmax(scores.masked_fill(~allowed, -torch.inf), dim=-1)
            out[b, :, a] = torch.einsum("hl,hld->hd", probs, v[b, :, index])
    return out


@st.composite
def padded_calls(draw):
    """(spec name, columns T, rows [(first, count)], call kind)."""
    name = draw(st.sampled_from(sorted(SPECS)))
    total = draw(st.integers(8, 40))
    rows = []
    for _ in range(3):
        left = draw(st.integers(0, total))
        right = draw(st.integers(0, total - left))
        rows.append((left, total - left - right))
    kind = draw(st.sampled_from(["prefill", "decode", "sliding"]))
    return name, total, rows, kind


def _run(backend, name, total, rows, kind, seed):
    first = [f for f, _ in rows]
    count = [c for _, c in rows]
    if kind == "decode":  # left padding: every row's tokens end at the last column (as generation has them)
        first = [total - c for c in count]
    mask = torch.zeros(3, total, dtype=torch.long)
    for b in range(3):
        mask[b, first[b] : first[b] + count[b]] = 1
    q_start, k_start = {"prefill": (0, 0), "decode": (total - 1, 0), "sliding": (total - 1, max(0, total - 8))}[kind]
    if kind == "sliding" and name != "window":
        k_start = 0  # a sliding call drops keys only a window spec never reads again
    m, length = total - q_start, total - k_start
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(3, 4, m, 16, generator=gen, requires_grad=True)
    k, v = (torch.randn(3, 2, length, 16, generator=gen, requires_grad=True) for _ in range(2))
    batch = PaddedBatch.from_mask(mask)
    out = padded_attention(q, k, v, _pattern(name), batch, q_start=q_start, k_start=k_start, backend=backend)
    want = _reference(q, k, v, name, first, count, q_start, k_start)
    assert ((out.double() - want).norm() / want.norm().clamp_min(1e-30)).item() < 1e-5
    weights = torch.randn(out.shape, generator=gen)
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    reference_loss = (want * weights.double()).sum()
    wants = torch.autograd.grad(reference_loss, (q, k, v), allow_unused=True) if want.requires_grad else (None,) * 3
    for got, expected in zip(grads, wants):
        expected = torch.zeros_like(got) if expected is None else expected
        assert (got.double() - expected).abs().max().item() < 1e-4


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=padded_calls(), seed=st.integers(0, 999))
def test_cpu_padded_attention_equals_each_row_alone(call, seed):
    _run("cpu", *call, seed)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(call=padded_calls(), seed=st.integers(0, 999))
def test_triton_padded_attention_equals_each_row_alone(call, seed):
    _run("triton", *call, seed)


def test_masks_that_are_refused():
    with pytest.raises(BackendError, match=r"0 \(padding\) and 1 \(token\); batch element 1, column 2 holds 2"):
        PaddedBatch.from_mask(torch.tensor([[1, 1, 1], [0, 1, 2]]))
    with pytest.raises(BackendError, match=r"row 0 has padding at column 2 between tokens \(columns 1\.\.3\)"):
        PaddedBatch.from_mask(torch.tensor([[0, 1, 0, 1], [1, 1, 1, 1]]))
    with pytest.raises(BackendError, match="2-D tensor"):
        PaddedBatch.from_mask(torch.ones(1, 1, 4))
    batch = PaddedBatch.from_mask(torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    assert batch.first.tolist() == [0, 0] and batch.count.tolist() == [3, 4] and batch.padded
    assert not PaddedBatch.from_mask(torch.ones(2, 3, dtype=torch.bool)).padded
    assert PaddedBatch.from_mask(torch.tensor([[0, 0, 0]])).count.tolist() == [0]


def test_non_causal_spec_with_padding_is_refused():
    spec = maskc.Spec.model_validate({"name": "bidirectional-window", "pattern": {"window": {"size": 5}}})
    pattern = maskc.compile(spec, seq_len=N, heads=2)
    batch = PaddedBatch.from_mask(torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    q, k = torch.randn(2, 2, 4, 16), torch.randn(2, 2, 4, 16)
    with pytest.raises(BackendError, match="is not causal"):
        padded_attention(q, k, k, pattern, batch, q_start=0)


def test_dropped_keys_the_spec_reads_are_refused():
    """A sliding call whose keys start after the sinks: the sinks are still read, so the call is refused."""
    batch = PaddedBatch.from_mask(torch.ones(1, 30, dtype=torch.long))
    q, k = torch.randn(1, 4, 1, 16), torch.randn(1, 2, 10, 16)
    with pytest.raises(BackendError, match=r"start at position 20, but pattern 'window-sinks' still reads position 0"):
        padded_attention(q, k, k, _pattern("window-sinks"), batch, q_start=29, k_start=20)
    out = padded_attention(q, k, k, _pattern("window"), batch, q_start=29, k_start=20)
    assert np.isfinite(out.numpy()).all()


def _left_padded(counts: list[int], total: int) -> tuple[torch.Tensor, list[int]]:
    mask = torch.zeros(len(counts), total, dtype=torch.long)
    for b, c in enumerate(counts):
        mask[b, total - c :] = 1
    return mask, [total - c for c in counts]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_sparse_attention_module_takes_a_padding_mask(name):
    """maskc.nn.SparseAttention(attention_mask=...) is padded_attention: each row alone, padding rows zero."""
    total, counts = 20, [20, 13, 0]
    mask, first = _left_padded(counts, total)
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(3, 4, total, 16, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(3, 2, total, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    module = maskc.nn.SparseAttention(_pattern(name), backend="cpu")
    out = module(q, k, v, attention_mask=mask)
    want = _reference(q, k, v, name, first, counts, 0, 0)
    torch.testing.assert_close(out, want, rtol=1e-9, atol=1e-12)
    assert not out[2].any() and not out[1, :, : total - 13].any()


def test_sparse_attention_module_decodes_a_padded_prompt():
    """A left-padded prompt into an empty cache, then steps of one real token: each step's output is
    the padded batch's attention over everything so far (positions counted per sequence)."""
    name, prompt, steps, counts = "window-sinks", 12, 4, [12, 5]
    total = prompt + steps
    mask, first = _left_padded(counts, prompt)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, total, 16, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 2, total, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    module = maskc.nn.SparseAttention(_pattern(name), backend="cpu")
    cache = module.new_cache(2, 2, 16, dtype=torch.float64)
    outs = [module(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt], cache=cache, attention_mask=mask)]
    for t in range(prompt, total):
        outs.append(module(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], cache=cache))
    want = _reference(q, k, v, name, first, [c + steps for c in counts], 0, 0)
    torch.testing.assert_close(torch.cat(outs, dim=2), want, rtol=1e-9, atol=1e-12)
    assert cache.slots <= 2 + 10 + 1  # sinks + window (+ the step's own token): the spec's retention


def test_sparse_attention_module_refuses_a_mask_it_cannot_honour():
    module = maskc.nn.SparseAttention(_pattern("window"), backend="cpu")
    q, k = torch.zeros(1, 4, 8, 16), torch.zeros(1, 2, 8, 16)
    v = k
    ones = torch.ones(1, 8, dtype=torch.long)
    with pytest.raises(BackendError, match="give no q_offset or k_offset"):
        module(q, k, v, attention_mask=ones, q_offset=0)
    with pytest.raises(BackendError, match=r"attention_mask must be \(batch, keys\) = \(1, 8\); got \(1, 7\)"):
        module(q, k, v, attention_mask=ones[:, :7])
    cache = module.new_cache(1, 2, 16)
    module(q, k, v, cache=cache)
    with pytest.raises(BackendError, match="goes with the prompt into an empty cache"):
        module(q[:, :, :1], k[:, :, :1], v[:, :, :1], cache=cache, attention_mask=ones[:, :1])
