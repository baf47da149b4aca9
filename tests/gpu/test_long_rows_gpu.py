"""Long rows and columns split into chunks on a CUDA GPU: the split kernels against a float32 reference.

Longformer (a window and global token 0) and BigBird at lengths where the default settings split
the global row and column into many chunks (asserted), and a forced small chunk size with GQA and
a batch; the reference is dense masked attention in float32 on the same inputs (the mask from the
IR's `to_dense`), its gradients from torch autograd. Outputs are compared with the tolerance of
tests/gpu/test_triton_gpu.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import maskc
from maskc.backends.triton import tables, tuning
from maskc.backends.triton.plans import plan_for
from maskc.errors import MaskcWarning

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}
CASES = {
    "longformer": {"pattern": [{"window": {"before": 256, "after": 256}}, {"global": {"tokens": [0]}}]},
    "bigbird": "specs/bigbird.yaml",
}


@pytest.fixture(autouse=True)
def fixed_first_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kernel's first configuration, untimed."""
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _splits(pattern: maskc.CompiledPattern, dtype: torch.dtype) -> dict[str, bool]:
    """Per kernel, whether the tables of its first configuration (the one that runs) split."""
    plan = plan_for(pattern)
    out = {}
    for kernel, walk in (("forward", "rows"), ("dkdv", "columns"), ("dq", "rows")):
        first = tuning.candidates(kernel, 64, dtype, plan.native_tile)[0]
        out[kernel] = plan.tables(walk, first.block_m, first.block_n, torch.device("cuda")).split
    return out


def _compile(name: str, n: int, heads: int) -> maskc.CompiledPattern:
    spec = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        source = maskc.Spec(name=name, **spec) if isinstance(spec, dict) else spec
        return maskc.compile(source, seq_len=n, heads=heads, schedule="single")


def _check(pattern: maskc.CompiledPattern, batch: int, heads: int, kv_heads: int, dtype: torch.dtype) -> None:
    n, d = pattern.n, 64
    gen = torch.Generator(device="cuda").manual_seed(n + heads)
    shapes = ((batch, heads, n, d), (batch, kv_heads, n, d), (batch, kv_heads, n, d))
    inputs = [torch.randn(s, generator=gen, device="cuda").to(dtype) for s in shapes]
    d_out = torch.randn((batch, heads, n, d), generator=gen, device="cuda")
    leaves = [x.clone().requires_grad_() for x in inputs]
    out = maskc.attention(*leaves, pattern, backend="triton")
    grads = torch.autograd.grad(out, leaves, d_out.to(dtype))
    layout_of = pattern.head_layout if len(pattern.head_layout) == heads else [0] * heads
    mask = torch.stack([torch.as_tensor(pattern.layouts[int(i)].to_dense(), device="cuda") for i in layout_of])
    ref_leaves = [x.float().requires_grad_() for x in inputs]
    group = heads // kv_heads
    k, v = (x.repeat_interleave(group, dim=1) for x in ref_leaves[1:])
    ref = torch.nn.functional.scaled_dot_product_attention(ref_leaves[0], k, v, attn_mask=mask)
    ref_grads = torch.autograd.grad(ref, ref_leaves, d_out)
    bound = TOLERANCE[dtype]
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref, *ref_grads)):
        error = ((got.float() - want).norm() / want.norm()).item()
        assert error < bound, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_chunks(name: str) -> None:
    """At n = 16384 the default settings split the long lines: exact against the reference."""
    pattern = _compile(name, 16384, heads=2)
    _check(pattern, 1, 2, 2, torch.bfloat16)
    assert _splits(pattern, torch.bfloat16) == {"forward": True, "dkdv": True, "dq": True}


def test_forced_small_chunks_gqa_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 3 tiles, GQA and a batch of 2, float32."""
    monkeypatch.setattr(tables, "CHUNK_TILES", 3)
    pattern = _compile("longformer", 4096, heads=4)
    _check(pattern, 2, 4, 2, torch.float32)
    assert _splits(pattern, torch.float32) == {"forward": True, "dkdv": True, "dq": True}
