"""A run-time layout decided by the documents is built once per documents tensor (backends/triton/reuse.py,
TRITON_INTERPRET=1 on the CPU): later calls with the same unchanged tensor build nothing and compute
what the CPU reference computes; a changed or another tensor, a top-k pattern, MASKC_REUSE_LAYOUT=0 and
tracing build anew."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_backend_triton import interpreter  # noqa: F401 - the module's TRITON_INTERPRET=1 fixture

import maskc
from maskc.backends.triton import runtime
from maskc.backends.triton.reuse import REUSE_LAYOUT, decided_by_documents
from maskc.errors import BackendError, MaskcWarning

N, HEADS, DIM = 96, 2, 16
WINDOW = {"window": {"before": 20, "after": 0}}
DOCUMENTS_WINDOW = {"causal": True, "pattern": {"intersect": [{"document": {}}, WINDOW]}}
PER_DOCUMENT_SINKS = {"causal": True, "pattern": [{"document": {}}, {"sink": {"count": 2, "per": "document"}}]}
TOPK = {"causal": True, "block_size": 16, "pattern": [{"window": {"before": 15, "after": 0}}, {"topk": {"blocks": 2}}]}


def _pattern(spec: dict) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        spec = maskc.Spec.model_validate({"name": "reuse", **spec})
        return maskc.compile(spec, seq_len=N, heads=HEADS, block_size=spec.block_size or (16, 16))


def _documents(*lengths: list[int]) -> torch.Tensor:
    return torch.as_tensor(np.stack([maskc.ids_from_lengths(row) for row in lengths]))


def _qkv(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, HEADS, N, DIM, generator=gen, requires_grad=True) for _ in range(3)]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The walks' tables compacted since the test began: one entry per table build."""
    made: list[str] = []
    compact = runtime.compact_kinds

    def counted(kind: torch.Tensor, transpose: bool):
        made.append("columns" if transpose else "rows")
        return compact(kind, transpose)

    monkeypatch.setattr(runtime, "compact_kinds", counted)
    monkeypatch.delenv(REUSE_LAYOUT, raising=False)
    return made


def _layer(pattern, documents, seed: int, backend: str = "triton") -> list[torch.Tensor]:
    """One layer's forward and backward: out and the three gradients."""
    q, k, v = _qkv(seed)
    out = maskc.attention(q, k, v, pattern, backend=backend, documents=documents)
    out.square().sum().backward()
    return [out.detach(), q.grad, k.grad, v.grad]


def _close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", [DOCUMENTS_WINDOW, PER_DOCUMENT_SINKS], ids=["window", "per-document sinks"])
def test_layers_sharing_documents_build_once(builds: list[str], spec: dict) -> None:
    pattern, documents = _pattern(spec), _documents([30, 40, 26], [96])
    first = _layer(pattern, documents, 0)
    built = len(builds)
    assert built > 0
    for seed in (1, 2):  # later layers: other q, k, v, the same documents
        _close(_layer(pattern, documents, seed), _layer(pattern, documents, seed, backend="cpu"))
    assert len(builds) == built, "a later layer with the same documents built tables again"
    _close(first, _layer(pattern, documents, 0, backend="cpu"))


def test_changed_or_other_documents_build_anew(builds: list[str]) -> None:
    pattern, documents = _pattern(DOCUMENTS_WINDOW), _documents([30, 40, 26], [96])
    _layer(pattern, documents, 0)
    built = len(builds)
    documents.copy_(_documents([50, 46], [10, 86]))  # in place: the version moves
    _close(_layer(pattern, documents, 1), _layer(pattern, documents, 1, backend="cpu"))
    assert len(builds) == 2 * built
    other = _documents([20] * 4 + [16], [96])
    _close(_layer(pattern, other, 2), _layer(pattern, other, 2, backend="cpu"))
    assert len(builds) == 3 * built


def test_patterns_decided_by_q_and_k_build_per_call(builds: list[str]) -> None:
    pattern = _pattern(TOPK)
    assert not decided_by_documents([layout.rule for layout in pattern.layouts])
    _layer(pattern, None, 0)
    built = len(builds)
    _close(_layer(pattern, None, 1), _layer(pattern, None, 1, backend="cpu"))
    assert len(builds) == 2 * built


def test_reuse_can_be_turned_off_and_a_bad_setting_is_named(builds: list[str], monkeypatch) -> None:
    pattern, documents = _pattern(DOCUMENTS_WINDOW), _documents([30, 40, 26], [96])
    monkeypatch.setenv(REUSE_LAYOUT, "0")
    _layer(pattern, documents, 0)
    built = len(builds)
    _layer(pattern, documents, 1)
    assert len(builds) == 2 * built
    monkeypatch.setenv(REUSE_LAYOUT, "yes")
    with pytest.raises(BackendError, match="MASKC_REUSE_LAYOUT must be 0 or 1"):
        _layer(pattern, documents, 2)


def test_inference_mode_documents_are_not_reused_and_stay_exact(builds: list[str]) -> None:
    """An inference-mode tensor has no version to tell a change by: each call builds."""
    pattern = _pattern(DOCUMENTS_WINDOW)
    q, k, v = (x.detach() for x in _qkv(0))
    with torch.inference_mode():
        documents = _documents([30, 40, 26], [96])
        got = [maskc.attention(q, k, v, pattern, backend="triton", documents=documents) for _ in range(2)]
        want = maskc.attention(q, k, v, pattern, backend="cpu", documents=documents)
    assert len(builds) == 2
    for out in got:
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
