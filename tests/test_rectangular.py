"""Rectangular calls on the CPU backend: queries and keys that are slices of the pattern's positions.

Every check compares with float64 dense attention on the slice of the brute-force mask (rows
q_offset …, columns k_offset …), outputs, lse and the gradients of q, k and v.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slicedref import q_starts_of, sliced_attention, slices
from specgen import brute_force_mask, spec_dicts, tile_shapes
from test_backend_cpu import assert_relative

import maskc
from maskc.errors import BackendError, MaskcWarning


def _compile(spec: dict, **kwargs: object) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(spec), **kwargs)


def _draw(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()


def check_slice(pattern, mask, batch, heads, kv_heads, m, nk, k_offset, q_offset, gen, backend="cpu", dim=8):
    q = _draw(gen, batch, heads, m, dim)
    k, v = _draw(gen, batch, kv_heads, nk, dim), _draw(gen, batch, kv_heads, nk, dim)
    offset = torch.tensor(q_offset) if isinstance(q_offset, list) else q_offset
    out, lse = maskc.attention(q, k, v, pattern, backend, return_lse=True, q_offset=offset, k_offset=k_offset)
    starts = q_starts_of(q_offset, batch, m, nk, k_offset)
    ref_out, ref_lse = sliced_attention(q, k, v, mask, starts, k_offset, dim**-0.5)
    assert out.shape == (batch, heads, m, dim) and lse.shape == (batch, heads, m)
    assert_relative(out, ref_out, "output")
    assert_relative(lse, ref_lse, "lse")
    d_out = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    d_lse = torch.randn(lse.shape, generator=gen, dtype=lse.dtype)
    grads = torch.autograd.grad([out, lse.masked_fill(torch.isinf(lse), 0.0)], [q, k, v], [d_out, d_lse])
    ref_grads = torch.autograd.grad([ref_out, ref_lse.masked_fill(torch.isinf(ref_lse), 0.0)], [q, k, v],
                                    [d_out, d_lse])  # fmt: skip
    for name, got, want in zip("qkv", grads, ref_grads):
        assert_relative(got, want, f"d{name}")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_dicts(max_n=80), tile_shapes(), st.data())
def test_slices_match_dense_attention(case, tile, data):
    spec, n = case
    heads = spec.get("heads", data.draw(st.sampled_from([1, 2])))
    kv_heads = 1 if heads % 2 else data.draw(st.sampled_from([1, 2]))
    batch = data.draw(st.integers(1, 3))
    pattern = _compile(spec, block_size=tile, heads=heads)
    m, nk, k_offset, q_offset = data.draw(slices(n, batch))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    check_slice(pattern, brute_force_mask(spec, n), batch, heads, kv_heads, m, nk, k_offset, q_offset, gen)


def test_decoding_step_is_the_last_row():
    """m = 1 against every key: the last row of full attention, in the default alignment."""
    pattern = _compile({"name": "w", "causal": True, "pattern": [{"window": {"before": 9}}, {"sink": {"count": 2}}]},
                       seq_len=50, block_size=16)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 50, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    full = maskc.attention(q, k, v, pattern, "cpu")
    last = maskc.attention(q[:, :, -1:], k, v, pattern, "cpu")
    torch.testing.assert_close(last, full[:, :, -1:], rtol=1e-12, atol=1e-12)


def test_empty_rows_give_zeros():
    pattern = _compile({"name": "g", "pattern": {"global": {"tokens": [3], "direction": "rows"}}}, seq_len=32,
                       block_size=16)  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(1, 1, 4, 8, generator=gen), torch.randn(1, 1, 10, 8, generator=gen), torch.randn(1, 1, 10, 8)
    out, lse = maskc.attention(q, k, v, pattern, "cpu", return_lse=True, q_offset=2, k_offset=5)
    assert torch.isinf(lse[0, 0, [0, 2, 3]]).all() and (out[0, 0, [0, 2, 3]] == 0).all()
    assert torch.isfinite(lse[0, 0, 1])


@pytest.mark.parametrize(
    "m, nk, kwargs, words",
    [
        (8, 4, {}, "q has 8 rows but k only 4"),
        (2, 8, {"k_offset": 60}, "expected 0 <= k_offset and k_offset + 8 <= 64"),
        (2, 8, {"q_offset": 63}, "expected 0 <= q_offset and q_offset + 2 <= 64"),
        (2, 8, {"q_offset": -1}, "expected 0 <= q_offset"),
        (2, 8, {"q_offset": torch.tensor([0, 70])}, "q_offset 70 (batch element 1)"),
        (2, 8, {"q_offset": torch.tensor([0])}, "one per batch element (2)"),
        (2, 8, {"q_offset": 1.5}, "q_offset (an integer or a tensor of shape (B,)) must be an integer"),
        (2, 8, {"k_offset": -3}, "expected 0 <= k_offset"),
    ],
)
def test_bad_offsets_are_refused(m, nk, kwargs, words):
    pattern = _compile({"name": "d", "pattern": {"dense": {}}}, seq_len=64, block_size=16)
    q, k = torch.zeros(2, 1, m, 8), torch.zeros(2, 1, nk, 8)
    with pytest.raises(BackendError, match=__import__("re").escape(words)):
        maskc.attention(q, k, k, pattern, "cpu", **kwargs)


def test_dynamic_patterns_refuse_rectangular_calls():
    pattern = maskc.compile("specs/reformer.yaml", seq_len=64, block_size=16)
    q, k = torch.zeros(1, 1, 1, 8), torch.zeros(1, 1, 64, 8)
    with pytest.raises(BackendError, match="decided at run time"):
        maskc.attention(q, k, k, pattern, "cpu")
