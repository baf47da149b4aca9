"""Run-time layouts on the Triton backend (TRITON_INTERPRET=1 on the CPU): documents, top-k and clusters
built on the device per call, against the CPU reference on the same inputs (outputs, lse and gradients),
and traced by torch.compile in one graph."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_backend_triton import interpreter  # noqa: F401 - the module's TRITON_INTERPRET=1 fixture

import maskc
from maskc.backends.triton.clusters import runs_in_cluster_order
from maskc.errors import DocumentsError, MaskcWarning

#: float32 kernels against the CPU backend's float32 computation of the same mask.
TOLERANCE = 1e-4


def _pattern(spec: dict, n: int, heads: int, tile: tuple[int, int]) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(
            maskc.Spec.model_validate({"name": "run-time", **spec}), seq_len=n, heads=heads, block_size=tile
        )


def _run(pattern, q, k, v, backend, documents=None, **options):
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    out, lse = maskc.attention(*leaves, pattern, backend=backend, documents=documents, return_lse=True, **options)
    gen = torch.Generator().manual_seed(5)
    g, h = torch.randn(out.shape, generator=gen), torch.randn(lse.shape, generator=gen)
    ((out * g).sum() + torch.where(torch.isfinite(lse), lse * h, 0).sum()).backward()
    return [out.detach(), lse.detach(), *(x.grad for x in leaves)]


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    finite = torch.isfinite(want)
    assert torch.equal(finite, torch.isfinite(got)), "rows without keys differ"
    got, want = got[finite].double(), want[finite].double()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def _compare(pattern, kv_heads: int, n: int, documents=None, seed: int = 0, heads: int | None = None) -> None:
    gen = torch.Generator().manual_seed(seed)
    heads = heads or pattern.heads
    q = torch.randn(2, heads, n, 16, generator=gen)
    k, v = (torch.randn(2, kv_heads, n, 16, generator=gen) for _ in range(2))
    got = _run(pattern, q, k, v, "triton", documents)
    want = _run(pattern, q, k, v, "cpu", documents)
    for name, a, b in zip(["out", "lse", "dq", "dk", "dv"], got, want):
        assert _relative(a, b) < TOLERANCE, name


def _documents(*lengths: list[int]) -> torch.Tensor:
    return torch.as_tensor(np.stack([maskc.ids_from_lengths(row) for row in lengths]))


DOCUMENT_SPECS = {
    "document-causal window + sinks per document": {
        "causal": True,
        "block_size": 16,
        "pattern": [
            {"intersect": [{"document": {}}, {"window": {"before": 9, "after": 0}}]},
            {"sink": {"count": 2, "per": "document"}},
        ],
    },
    "documents with globals per document, not causal": {
        "pattern": [
            {"intersect": [{"document": {}}, {"window": {"size": 6}}]},
            {"global": {"first": 3, "per": "document"}},
        ]
    },
    "window minus other documents": {
        "causal": True,
        "pattern": {"difference": [{"window": {"before": 20}}, {"document": {}}]},
    },
}


@pytest.mark.parametrize(
    ("name", "tile", "kv_heads"),
    [(name, [(16, 16), (32, 16)][k % 2], 2 - k % 2) for k, name in enumerate(DOCUMENT_SPECS)],
)
def test_documents_match_the_cpu_reference(name: str, tile: tuple[int, int], kv_heads: int) -> None:
    n = 75
    pattern = _pattern(DOCUMENT_SPECS[name], n, 1, tile)
    documents = _documents([10, 31, 1, 33], [75]) * 7 - 3
    _compare(pattern, kv_heads, n, documents, heads=2)


@pytest.mark.parametrize(("share", "causal"), [("head", True), ("group", False)])
def test_topk_matches_the_cpu_reference(share: str, causal: bool) -> None:
    spec = {
        "causal": causal,
        "block_size": 16,
        "pattern": [
            {"window": {"before": 5, "after": 0}},
            {"topk": {"blocks": 2, "share": share}},
            {"sink": {"count": 2}},
        ],
    }
    _compare(_pattern(spec, 70, 4, (16, 16)), 2, 70)


TILES_AND_BLOCKS = [
    (8, (32, 16), True),  # tiles spanning several blocks: a flag per element
    (16, (16, 32), False),
    (32, (16, 16), True),  # tiles inside one block pair: one flag per tile, at the tile's first positions
    (32, (16, 32), True),
    (32, (16, 32), False),
    (32, (32, 16), False),
]


@pytest.mark.parametrize(("block", "tile", "causal"), TILES_AND_BLOCKS)
def test_topk_on_tiles_other_than_its_blocks(block: int, tile: tuple[int, int], causal: bool) -> None:
    """Two blocks selected per query block among 7 to 25 (n = 200), so a flag read at the wrong block
    pair (swapped, of another tile, of the first block) changes the mask."""
    spec = {"causal": causal, "block_size": block, "pattern": [{"window": {"before": 3}}, {"topk": {"blocks": 2}}]}
    _compare(_pattern(spec, 200, 2, tile), 1, 200)


def test_topk_inside_cluster_order() -> None:
    """Under cluster order the predicate reads original positions through the order tables, which
    the tile's first positions do not describe: the selection is read per element there."""
    spec = {
        "causal": True,
        "block_size": 16,
        "pattern": {
            "intersect": [
                {"cluster": {"clusters": 3, "method": "kmeans"}},
                [{"window": {"before": 4}}, {"topk": {"blocks": 2}}],
            ]
        },
    }
    pattern = _pattern(spec, 100, 2, (16, 16))
    assert runs_in_cluster_order(pattern)
    _compare(pattern, 2, 100)


@pytest.mark.parametrize("method", ["kmeans", "lsh"])
def test_clusters_match_the_cpu_reference(method: str) -> None:
    spec = {"causal": True, "pattern": [{"cluster": {"clusters": 4, "method": method}}, {"window": {"before": 4}}]}
    _compare(_pattern(spec, 50, 2, (16, 16)), 2, 50)


def test_documents_and_topk_together() -> None:
    spec = {
        "causal": True,
        "block_size": 16,
        "pattern": {"intersect": [{"document": {}}, [{"window": {"before": 7}}, {"topk": {"blocks": 1}}]]},
    }
    _compare(_pattern(spec, 64, 2, (16, 16)), 2, 64, _documents([20, 44], [64]))


def test_missing_documents_on_the_triton_path() -> None:
    pattern = _pattern({"pattern": {"document": {}}}, 32, 1, (16, 16))
    q = torch.randn(1, 1, 32, 16)
    with pytest.raises(DocumentsError, match="depends on documents"):
        maskc.attention(q, q, q, pattern, backend="triton")


def test_run_time_patterns_refuse_rectangular_calls_on_the_triton_path() -> None:
    """Run-time tables cover all n positions: a rectangular call of such a pattern is refused, while a
    static pattern's rectangular call still matches the CPU reference."""
    q, k, v = (torch.randn(2, 1, 32, 16) for _ in range(3))
    documents = _documents([10, 22], [32])
    with pytest.raises(maskc.BackendError, match="full-length calls"):
        maskc.attention(q[:, :, 16:], k, v, _pattern({"pattern": {"document": {}}}, 32, 1, (16, 16)),
                        backend="triton", documents=documents)  # fmt: skip
    topk = _pattern({"causal": True, "block_size": 16, "pattern": {"topk": {"blocks": 1}}}, 32, 1, (16, 16))
    with pytest.raises(maskc.BackendError, match="full-length calls"):
        maskc.attention(q[:, :, 8:], k, v, topk, backend="triton")
    static = _pattern({"causal": True, "pattern": {"window": {"before": 9, "after": 0}}}, 32, 1, (16, 16))
    got = maskc.attention(q[:, :, 8:], k, v, static, backend="triton", return_lse=True)
    want = maskc.attention(q[:, :, 8:], k, v, static, backend="cpu", return_lse=True)
    for a, b in zip(got, want):
        assert _relative(a, b) < TOLERANCE


def test_torch_compile_traces_one_graph() -> None:
    """Documents and top-k under torch.compile(fullgraph=True): the layout build is traced (torch ops)
    and the kernels run as the custom op, with the same loss and gradients as the eager call."""
    maskc.available_backends()
    spec = {
        "causal": True,
        "block_size": 16,
        "pattern": [{"intersect": [{"document": {}}, {"window": {"before": 9}}]}, {"topk": {"blocks": 1}}],
    }
    pattern = _pattern(spec, 64, 2, (16, 16))
    q, k, v = (torch.randn(1, 2, 64, 16, requires_grad=True) for _ in range(3))
    documents = _documents([10, 31, 23])

    def step(q, k, v, documents):
        return maskc.attention(q * 2, k, v, pattern, backend="triton", documents=documents).square().mean()

    loss = torch.compile(step, backend="aot_eager", fullgraph=True)(q, k, v, documents)
    loss.backward()
    compiled = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    want = step(q, k, v, documents)
    want.backward()
    assert torch.allclose(loss, want)
    assert all(torch.allclose(a, x.grad) for a, x in zip(compiled, (q, k, v)))
