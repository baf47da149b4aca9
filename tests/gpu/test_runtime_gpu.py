"""Run-time layouts on a CUDA GPU: documents, top-k and clusters against the float32 chunked reference
(the same check as test_triton_gpu.py, on the masks the CPU resolution gives), in a CUDA graph, and
under torch.compile with inductor."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from test_triton_gpu import TOLERANCE, _reference, _relative

import maskc
from maskc.calls import check_shapes, static_patterns
from maskc.errors import MaskcWarning

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

#: The 8 document lengths of the benchmark, scaled down (sum 8192).
LENGTHS = [595, 303, 642, 450, 293, 1466, 3488, 955]
SPECS = {
    "document-causal": {"causal": True, "pattern": {"document": {}}},
    "document-causal window 1024 + 4 sinks per document": {
        "causal": True,
        "pattern": [
            {"intersect": [{"document": {}}, {"window": {"before": 1023, "after": 0}}]},
            {"sink": {"count": 4, "per": "document"}},
        ],
    },
    "top-k 8 blocks of 64 + window 256 + 4 sinks": {
        "causal": True,
        "block_size": 64,
        "pattern": [{"window": {"before": 255, "after": 0}}, {"topk": {"blocks": 8}}, {"sink": {"count": 4}}],
    },
    "top-k shared by groups": {
        "causal": True,
        "block_size": 64,
        "pattern": [{"window": {"before": 127, "after": 0}}, {"topk": {"blocks": 4, "share": "group"}}],
    },
    "k-means routing, causal": {"causal": True, "pattern": {"cluster": {"clusters": 32}}},
    "LSH buckets, causal window 2048": {
        "causal": True,
        "pattern": {"intersect": [{"cluster": {"clusters": 16, "method": "lsh"}}, {"window": {"before": 2047}}]},
    },
    "k-means minus the local window (cluster order, difference)": {
        "causal": True,
        "pattern": {"difference": [{"cluster": {"clusters": 24}}, {"window": {"before": 63, "after": 0}}]},
    },
}


def _pattern(name: str, n: int, heads: int) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate({"name": name, **SPECS[name]}), seq_len=n, heads=heads)


def _documents(pattern: maskc.CompiledPattern, batch: int) -> torch.Tensor | None:
    if "document" not in pattern.spec.name:
        return None
    rows = [maskc.ids_from_lengths(LENGTHS), maskc.ids_from_lengths(LENGTHS[::-1])][:batch]
    return torch.as_tensor(np.stack(rows), device="cuda")


@pytest.mark.parametrize("name", list(SPECS))
def test_against_the_float32_reference(name: str) -> None:
    torch.manual_seed(0)
    n, heads, kv_heads, dtype = sum(LENGTHS), 4, 2, torch.bfloat16
    pattern = _pattern(name, n, heads)
    q = torch.randn(2, heads, n, 128, device="cuda", dtype=dtype)
    k, v = (torch.randn(2, kv_heads, n, 128, device="cuda", dtype=dtype) for _ in range(2))
    g = torch.randn_like(q)
    documents = _documents(pattern, 2)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse = maskc.attention(*leaves, pattern, backend="triton", documents=documents, return_lse=True)
    out.backward(g)
    resolved = static_patterns(pattern, q, k, check_shapes(q, k, v, pattern), documents)
    ref_out, ref_lse, *ref_grads = _reference(resolved, q, k, v, g, 1 / math.sqrt(128))
    bound = TOLERANCE[dtype]
    assert _relative(out, ref_out) < bound
    assert _relative(lse, ref_lse) < bound
    for got, want in zip((x.grad for x in leaves), ref_grads):
        assert _relative(got, want) < bound


@pytest.mark.parametrize(
    "name",
    [
        "document-causal window 1024 + 4 sinks per document",
        "top-k 8 blocks of 64 + window 256 + 4 sinks",
        "k-means routing, causal",
        "LSH buckets, causal window 2048",
    ],
)
def test_cuda_graph_capture(name: str) -> None:
    """A forward call captured in a CUDA graph, replayed on new q, k, v and new documents: the layout
    is rebuilt on the device at each replay, with no host round trip in the captured work."""
    torch.manual_seed(1)
    n, heads = sum(LENGTHS), 4
    pattern = _pattern(name, n, heads)
    q, k, v = (torch.randn(1, heads, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    documents = _documents(pattern, 1)

    def call():
        return maskc.attention(q, k, v, pattern, backend="triton", documents=documents)

    call()  # tuning, kernel build and first copies happen outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    for x in (q, k, v):
        x.copy_(torch.randn_like(x))
    if documents is not None:
        documents.copy_(torch.as_tensor(maskc.ids_from_lengths(LENGTHS[::-1]), device="cuda")[None])
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, call())


def test_held_centroids_against_the_float32_reference() -> None:
    """k-means routing with centroids held between calls (maskc.nn.ClusterCentroids), in cluster order."""
    torch.manual_seed(2)
    name, n, heads = "k-means routing, causal", sum(LENGTHS), 4
    pattern = _pattern(name, n, heads)
    centroids = maskc.nn.ClusterCentroids(heads, 32, 128).cuda()
    q, k, v = (torch.randn(1, heads, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    centroids.update(q, k)
    held = centroids.centroids
    g = torch.randn_like(q)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse = maskc.attention(*leaves, pattern, backend="triton", centroids=held, return_lse=True)
    out.backward(g)
    resolved = static_patterns(pattern, q, k, check_shapes(q, k, v, pattern), None, held)
    ref_out, ref_lse, *ref_grads = _reference(resolved, q, k, v, g, 1 / math.sqrt(128))
    bound = TOLERANCE[torch.bfloat16]
    assert _relative(out, ref_out) < bound
    assert _relative(lse, ref_lse) < bound
    for got, want in zip((x.grad for x in leaves), ref_grads):
        assert _relative(got, want) < bound


@pytest.mark.parametrize(
    "name", ["document-causal window 1024 + 4 sinks per document", "LSH buckets, causal window 2048"]
)
def test_torch_compile_with_inductor(name: str) -> None:
    maskc.available_backends()
    n, heads = sum(LENGTHS), 4
    pattern = _pattern(name, n, heads)
    q, k, v = (torch.randn(1, heads, n, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    documents = _documents(pattern, 1)

    def step(q, k, v, documents):
        return maskc.attention(q * 2, k, v, pattern, documents=documents).float().square().mean()

    loss = torch.compile(step, fullgraph=True)(q, k, v, documents)
    loss.backward()
    compiled = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    want = step(q, k, v, documents)
    want.backward()
    assert torch.allclose(loss, want, rtol=1e-3)
    assert all(_relative(a, x.grad.float()) < 1e-2 for a, x in zip(compiled, (q, k, v)))
