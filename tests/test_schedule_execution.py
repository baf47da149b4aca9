"""Pass-by-pass execution agrees with the CPU reference: outputs, lse and gradients, GQA,
per-head patterns and empty rows, with every lowering forced on ("split") and off ("single")."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import EMPTY_ROWS_SPEC, lowering_spec_dicts

import maskc
from maskc.backends.cpu.passes import attention_by_passes
from maskc.errors import MaskcWarning

MODES = ["single", "auto", "split"]


def _compile(
    spec: dict | str, n: int, schedule: str, tile: int | None = None, heads: int | None = None
) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        source = maskc.Spec.model_validate(spec) if isinstance(spec, dict) else spec
        return maskc.compile(source, seq_len=n, block_size=tile, heads=heads, schedule=schedule)


def _inputs(heads: int, kv_heads: int, n: int, d: int = 8, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(2, heads, n, d), (2, kv_heads, n, d), (2, kv_heads, n, d)]
    return [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]


def check_against_reference(pattern: maskc.CompiledPattern, heads: int, kv_heads: int, seed: int = 0) -> None:
    q, k, v = _inputs(heads, kv_heads, pattern.n, seed=seed)
    want, want_lse = maskc.attention(q, k, v, pattern, backend="cpu", return_lse=True)
    got, got_lse = attention_by_passes(q, k, v, pattern)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_lse, want_lse.to(got_lse.dtype), rtol=1e-9, atol=1e-9)
    grad, lse_grad = torch.randn_like(want), torch.randn_like(got_lse)

    def loss(out: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
        return (out * grad).sum() + torch.where(torch.isfinite(lse), lse * lse_grad, 0).sum()

    expected = torch.autograd.grad(loss(want, want_lse.to(got_lse.dtype)), (q, k, v))
    actual = torch.autograd.grad(loss(got, got_lse), (q, k, v))
    for name, a, e in zip("qkv", actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-8, atol=1e-8, msg=f"d{name}")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lowering_spec_dicts(max_n=96), st.sampled_from(MODES))
def test_passes_match_reference(case: tuple[dict, int], mode: str) -> None:
    spec, n = case
    check_against_reference(_compile(spec, n, mode, tile=16), heads=2, kv_heads=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "spec",
    [
        "specs/sparse_transformer_strided.yaml",
        "specs/sparse_transformer_fixed.yaml",
        "specs/longformer.yaml",
        "specs/streaming_llm.yaml",
        "specs/axial_64x64.yaml",
    ],
)
def test_catalogue_specs_gqa(spec: str, mode: str) -> None:
    check_against_reference(_compile(spec, 256, mode, tile=16, heads=4), heads=4, kv_heads=2)


@pytest.mark.parametrize("mode", MODES)
def test_per_head_patterns(mode: str) -> None:
    pattern = _compile("specs/sparse_transformer_strided_heads.yaml", 256, mode, tile=16)
    assert len(pattern.layouts) == 2
    check_against_reference(pattern, heads=pattern.heads, kv_heads=1)


@pytest.mark.parametrize("mode", MODES)
def test_empty_rows(mode: str) -> None:
    spec = EMPTY_ROWS_SPEC
    pattern = _compile(spec, 64, mode, tile=16)
    assert len(pattern.layouts[0].empty_rows()) > 0
    check_against_reference(pattern, heads=1, kv_heads=1)
