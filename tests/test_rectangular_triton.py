"""Rectangular calls on the Triton kernels, through Triton's interpreter (TRITON_INTERPRET=1).

Outputs, lse and the gradients of q, k and v against float64 dense attention on the slice of the
brute-force mask (rows q_offset …, columns k_offset …), for offsets drawn by hypothesis: the
default bottom-right alignment, an integer, and one start per batch element.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)
from slicedref import q_starts_of, sliced_attention, slices
from specgen import brute_force_mask

import maskc
from maskc.backends.triton.span import Span
from maskc.errors import MaskcWarning

#: Small specs (the interpreter is slow): GQA, a per-head pattern, globals, tiles not dividing n.
SPECS = [
    ({"name": "swa-sinks", "causal": True, "pattern": [{"window": {"before": 11}}, {"sink": {"count": 3}}]}, 70, 1),
    (
        {
            "name": "per-head",
            "heads": 2,
            "pattern": [{"window": {"size": 20}}, {"global": {"tokens": [5]}}],
            "head_patterns": [{"heads": [1], "pattern": {"stride": {"every": 7}}}],
        },
        64,
        2,
    ),
    ({"name": "dense-causal", "causal": True, "pattern": {"dense": {}}}, 48, 2),
]


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    assert torch.isfinite(got).all(), "non-finite values"
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(SPECS) - 1), data=st.data())
def test_slices_match_dense_attention(which, data):
    spec, n, kv_heads = SPECS[which]
    batch = data.draw(st.integers(1, 2))
    m, nk, k_offset, q_offset = data.draw(slices(n, batch))
    check_slice(spec, n, kv_heads, batch, m, nk, k_offset, q_offset, data.draw(st.integers(0, 999)))


@pytest.mark.parametrize("which", range(len(SPECS)))
def test_slices_on_tile_borders(which):
    """Rectangles whose rows and keys start and end on tile borders take the kernels' path without
    bounds checks (a context-parallel shard's call); they must stay exact."""
    spec, n, kv_heads = SPECS[which]
    n = 64 * (n // 64) or 64
    assert Span(n=n, q_len=32, q_first=32, q_end=64, k_start=0, k_end=64).even(32, 32)
    check_slice(spec, n, kv_heads, 1, 32, 64, 0, 32, seed=which)
    check_slice(spec, n, kv_heads, 2, 32, 32, 32, 32, seed=which + 10)


def check_slice(spec: dict, n: int, kv_heads: int, batch: int, m: int, nk: int, k_offset: int, q_offset, seed: int):
    heads = spec.get("heads", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec.model_validate(spec), seq_len=n, block_size=(16, 16), heads=heads)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, m, 16, generator=gen)
    k, v = (torch.randn(batch, kv_heads, nk, 16, generator=gen) for _ in range(2))
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    offset = torch.tensor(q_offset) if isinstance(q_offset, list) else q_offset
    out, lse = maskc.attention(*leaves, pattern, "triton", return_lse=True, q_offset=offset, k_offset=k_offset)
    ref_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    starts = q_starts_of(q_offset, batch, m, nk, k_offset)
    ref_out, ref_lse = sliced_attention(*ref_leaves, brute_force_mask(spec, n), starts, k_offset, 0.25)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)), "rows without keys differ"
    finite = torch.isfinite(ref_lse)
    assert _relative(out, ref_out) < 1e-4
    assert _relative(lse[finite], ref_lse[finite]) < 1e-4
    d_out = torch.randn(out.shape, generator=gen)
    d_lse = torch.randn(lse.shape, generator=gen)
    grads = torch.autograd.grad([out, torch.where(finite, lse, 0.0)], leaves, [d_out, d_lse])
    ref_grads = torch.autograd.grad([ref_out, torch.where(finite, ref_lse, 0.0)], ref_leaves,
                                    [d_out.double(), d_lse.double()])  # fmt: skip
    for name, got, want in zip("qkv", grads, ref_grads):
        assert _relative(got, want) < 1e-4, f"d{name}"
