"""The Triton kernels run pass schedules exactly: forward, lse and gradients against the CPU
reference under TRITON_INTERPRET=1, with every lowering forced on ("split") and off ("single"):
GQA, per-head patterns, empty rows, and random unions of strides, dilations, windows and globals."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import EMPTY_ROWS_SPEC, lowering_spec_dicts

import maskc
from maskc.errors import MaskcWarning
from maskc.schedule import schedule_of

TOLERANCE = 1e-4


@pytest.fixture(autouse=True, scope="module")
def interpreter(tmp_path_factory: pytest.TempPathFactory):
    """TRITON_INTERPRET=1 and a fresh kernel cache for this module only (as test_backend_triton.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        patch.setenv("MASKC_CACHE_DIR", str(tmp_path_factory.mktemp("maskc-cache")))
        yield


def _compile(spec: dict | str, n: int, mode: str, tile: int = 16, heads: int | None = None) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        source = maskc.Spec.model_validate(spec) if isinstance(spec, dict) else spec
        return maskc.compile(source, seq_len=n, block_size=tile, heads=heads, schedule=mode)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    assert torch.isfinite(got).all(), "non-finite values"
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


def check_triton(pattern: maskc.CompiledPattern, heads: int, kv_heads: int, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    n, d = pattern.n, 16
    shapes = [(1, heads, n, d), (1, kv_heads, n, d), (1, kv_heads, n, d)]
    inputs = [torch.randn(s, generator=gen) for s in shapes]
    grad = torch.randn((1, heads, n, d), generator=gen)
    lse_grad = torch.randn((1, heads, n), generator=gen)
    results = {}
    for backend, dtype in (("cpu", torch.float64), ("triton", torch.float32)):
        leaves = [x.to(dtype).requires_grad_() for x in inputs]
        out, lse = maskc.attention(*leaves, pattern, backend=backend, return_lse=True)
        lse_term = torch.where(torch.isfinite(lse), lse * lse_grad.to(lse.dtype), 0).sum()
        grads = torch.autograd.grad((out * grad.to(dtype)).sum() + lse_term, leaves)
        results[backend] = (out, lse, grads)
    want, got = results["cpu"], results["triton"]
    assert _relative(got[0], want[0]) < TOLERANCE
    finite = torch.isfinite(want[1])
    assert torch.equal(torch.isfinite(got[1]), finite), "rows with no key must have lse = -inf"
    assert _relative(got[1][finite], want[1][finite]) < TOLERANCE
    for name, a, e in zip("qkv", got[2], want[2]):
        assert _relative(a, e) < TOLERANCE, f"d{name}"


#: The catalogue's Sparse Transformer and Longformer shapes, scaled down for the interpreter.
SMALL_SPECS = {
    "strided": {"causal": True, "pattern": [{"window": {"before": 8, "after": 0}}, {"stride": {"every": 8}}]},
    "fixed": {
        "causal": True,
        "pattern": [{"block_local": {"size": 8}}, {"global": {"every": 8, "offset": 7, "direction": "columns"}}],
    },
    "longformer": {"pattern": [{"window": {"size": 8}}, {"global": {"tokens": [0]}}]},
    "sink": {"causal": True, "pattern": [{"window": {"before": 12, "after": 0}}, {"sink": {"count": 2}}]},
    "axial": {"pattern": {"axial": {"width": 8}}},
}


@pytest.mark.parametrize(
    ("name", "mode"), [(name, "split") for name in sorted(SMALL_SPECS)] + [("strided", "single"), ("fixed", "single")]
)
def test_small_specs_gqa(name: str, mode: str) -> None:
    """Each lowering forced on; off (one pass) for two of them, as test_backend_triton.py runs every spec."""
    pattern = _compile({"name": name, **SMALL_SPECS[name]}, 64, mode, heads=4)
    assert schedule_of(pattern)[0].single == (mode == "single")
    check_triton(pattern, heads=4, kv_heads=2)


@pytest.mark.parametrize("mode", ["single", "split"])
def test_per_head_patterns(mode: str) -> None:
    pattern = _compile("specs/sparse_transformer_strided_heads.yaml", 160, mode)
    check_triton(pattern, heads=pattern.heads, kv_heads=1)


def test_empty_rows_split() -> None:
    spec = EMPTY_ROWS_SPEC
    check_triton(_compile(spec, 48, "split"), heads=1, kv_heads=1)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lowering_spec_dicts(max_n=64), st.sampled_from(["auto", "split"]))
def test_random_unions(case: tuple[dict, int], mode: str) -> None:
    spec, n = case
    check_triton(_compile(spec, n, mode), heads=2, kv_heads=1)
