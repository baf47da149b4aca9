"""Both backends on grid patterns, forward and backward, against float64 dense attention under the
brute-force mask of the definitions (Triton through its interpreter, as in test_backend_triton)."""

from __future__ import annotations

import pytest
import torch
from specgen import brute_force_mask
from test_backend_triton import TOLERANCE, _inputs, _relative, interpreter  # noqa: F401 (fixture)

import maskc

CASES = {
    "natten-2d-dilated-text": (
        {"grid": {"shape": [9, 14], "text": 5}, "pattern": {"neighborhood": {"kernel": [3, 5], "dilation": [2, 1]}}},
        (16, 32),
        torch.float32,
    ),
    "natten-3d-causal-time-tiled": (
        {
            "grid": {"shape": [3, 4, 8], "order": {"tiles": [1, 2, 4]}},
            "pattern": {"neighborhood": {"kernel": [2, 3, 5], "causal": [True, False, False]}},
        },
        (32, 16),
        torch.bfloat16,
    ),
    "sta-3d-text-tiled": (
        {
            "grid": {"shape": [4, 8, 8], "order": {"tiles": [2, 4, 4]}, "text": 7},
            "pattern": {"tiles": {"tile": [2, 4, 4], "kernel": [2, 8, 4]}},
        },
        (32, 32),
        torch.float32,
    ),
    "sta-2d-row-major-no-text": (
        {
            "grid": {"shape": [12, 12], "text": 3},
            "pattern": {"tiles": {"tile": [4, 4], "kernel": [4, 8], "text": "none"}},
        },
        (16, 16),
        torch.bfloat16,
    ),
}


def _dense_reference(q, k, v, mask, g):
    """float64 dense attention under `mask`; returns output and the gradients of sum(out · g)."""
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    scores = (leaves[0] @ leaves[1].transpose(-1, -2)) * q.shape[-1] ** -0.5
    out = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0) @ leaves[2]
    (out * g.double()).sum().backward()
    return out.detach(), [x.grad for x in leaves]


@pytest.mark.parametrize("backend", ["triton", "cpu"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_grid_patterns_forward_and_backward(name: str, backend: str) -> None:
    data, tile, dtype = CASES[name]
    spec = maskc.Spec(name=name, **data)
    pattern = maskc.compile(spec, block_size=tile, heads=2)
    n = pattern.n
    q, k, v = _inputs(1, 2, 2, n, 16, 16, dtype, seed=n)
    mask = torch.as_tensor(brute_force_mask(spec.to_data(), n))
    g = torch.randn(1, 2, n, 16, generator=torch.Generator().manual_seed(1)).to(dtype)
    want, want_grads = _dense_reference(q, k, v, mask, g)
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    out = maskc.attention(*leaves, pattern, backend=backend)
    (out * g).sum().backward()
    bound = TOLERANCE[dtype]
    assert _relative(out, want) < bound
    for label, leaf, grad in zip("qkv", leaves, want_grads):
        assert _relative(leaf.grad, grad) < bound, f"d{label}"
