"""Context-parallel local calls on the Triton kernels, through Triton's interpreter (TRITON_INTERPRET=1):
every rank's rectangular calls and lse merges (`maskc.distributed.simulate`) against one CPU call."""

from __future__ import annotations

import torch
from cp_worker import compile_spec
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)

import maskc
from maskc import distributed as md

SPEC = {
    "name": "longformer-causal-sink",
    "heads": 2,
    "pattern": [{"window": {"before": 13, "after": 4}}, {"global": {"tokens": [0]}}],
    "head_patterns": [{"heads": [1], "pattern": [{"window": {"before": 5}}, {"sink": {"count": 2}}]}],
}


def test_triton_local_calls_match_one_call() -> None:
    """Zigzag over two ranks: rank 0 holds two separate chunks, rank 1 two adjacent ones."""
    sharding = "zigzag"
    n = 96
    pattern = compile_spec(SPEC, n, heads=2, tile=16)
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, n, 16, generator=gen, requires_grad=True)
    k, v = (torch.randn(1, 1, n, 16, generator=gen, requires_grad=True) for _ in "kv")
    w = torch.randn(1, 2, n, 16, generator=gen)
    results = []
    for out, lse in (
        maskc.attention(q.double(), k.double(), v.double(), pattern, return_lse=True),
        md.simulate(q, k, v, pattern, 2, sharding, backend="triton"),
    ):
        grads = torch.autograd.grad((out * w.to(out.dtype)).sum() + lse.sum(), (q, k, v))
        results.append([out, lse, *grads])
    for what, want, got in zip(("out", "lse", "dq", "dk", "dv"), *results):
        err = ((got.double() - want.double()).norm() / want.double().norm()).item()
        assert err < 1e-4, (what, err)
