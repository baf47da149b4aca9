"""Rectangular calls and decoding over a KV cache on a CUDA GPU, against the CPU backend in float64."""

from __future__ import annotations

import pytest
import torch

import maskc

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SPEC = maskc.Spec(name="swa-sinks", causal=True, pattern=[maskc.Sink(count=4), maskc.Window(before=511, after=0)])
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double().cpu() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rectangular_forward_and_backward(dtype):
    pattern = maskc.compile(SPEC, seq_len=4096)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 700, 128, generator=gen)
    k, v = (torch.randn(2, 2, 1500, 128, generator=gen) for _ in range(2))
    q_offset, k_offset = torch.tensor([2000, 2650]), 1900
    leaves = [x.to("cuda", dtype).requires_grad_() for x in (q, k, v)]
    out = maskc.attention(*leaves, pattern, q_offset=q_offset.cuda(), k_offset=k_offset)
    ref_leaves = [x.double().requires_grad_() for x in (q, k, v)]
    ref = maskc.attention(*ref_leaves, pattern, "cpu", q_offset=q_offset, k_offset=k_offset)
    assert _relative(out, ref) < TOLERANCE[dtype]
    grad = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, leaves, grad.to("cuda", dtype))
    want = torch.autograd.grad(ref, ref_leaves, grad)
    for name, a, b in zip("qkv", got, want):
        assert _relative(a, b) < TOLERANCE[dtype], f"d{name}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("step", [1, 4, 16])
def test_decoding_over_the_cache(dtype, step):
    pattern = maskc.compile(SPEC, seq_len=4096)
    gen = torch.Generator().manual_seed(step)
    lengths = [1800, 700, 3000]
    q = torch.randn(3, 32, 3100, 128, generator=gen)
    k, v = (torch.randn(3, 8, 3100, 128, generator=gen) for _ in range(2))
    cache = maskc.KVCache(pattern, batch=3, kv_heads=8, head_dim=128, dtype=dtype, device="cuda", step_tokens=step)
    cache.append(k[:, :, :3000].to("cuda", dtype), v[:, :, :3000].to("cuda", dtype), counts=lengths)
    assert cache.slots == 4 + 512 + step - 1
    for _ in range(3):
        cache.append(*(torch.stack([x[b, :, lengths[b] : lengths[b] + step] for b in range(3)]).to("cuda", dtype)
                       for x in (k, v)))  # fmt: skip
        lengths = [x + step for x in lengths]
        step_q = torch.stack([q[b, :, lengths[b] - step : lengths[b]] for b in range(3)])
        got = cache.attention(step_q.to("cuda", dtype))
        for b in range(3):
            keys = [x[b : b + 1, :, : lengths[b]].double() for x in (k, v)]
            want = maskc.attention(step_q[b : b + 1].double(), *keys, pattern, "cpu")
            assert _relative(got[b : b + 1], want) < TOLERANCE[dtype]
