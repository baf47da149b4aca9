"""A run-time layout decided by the documents is built once per documents tensor (backends/triton/reuse.py,
TRITON_INTERPRET=1 on the CPU): later calls with the same unchanged tensor build nothing and compute
what the CPU reference computes; a changed or another tensor, a top-k pattern, MASKC_REUSE_LAYOUT=0 and
torch.compile build anew; inference-mode calls keep nothing; a freed tensor's layout is dropped."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
import torch
from test_backend_triton import interpreter  # noqa: F401 - the module's TRITON_INTERPRET=1 fixture

import maskc
from maskc.backends.triton import runtime
from maskc.backends.triton.plans import plan_for
from maskc.backends.triton.reuse import REUSE_LAYOUT, decided_by_documents
from maskc.errors import BackendError, MaskcWarning

N, HEADS, DIM = 96, 2, 16
WINDOW = {"window": {"before": 20, "after": 0}}
DOCUMENTS_WINDOW = {"causal": True, "pattern": {"intersect": [{"document": {}}, WINDOW]}}
PER_DOCUMENT_SINKS = {"causal": True, "pattern": [{"document": {}}, {"sink": {"count": 2, "per": "document"}}]}
TOPK = {"causal": True, "block_size": 16, "pattern": [{"window": {"before": 15, "after": 0}}, {"topk": {"blocks": 2}}]}


def _pattern(spec: dict, heads: int = HEADS) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        spec = maskc.Spec.model_validate({"name": "reuse", **spec})
        return maskc.compile(spec, seq_len=N, heads=heads, block_size=spec.block_size or (16, 16))


def _documents(*lengths: list[int]) -> torch.Tensor:
    return torch.as_tensor(np.stack([maskc.ids_from_lengths(row) for row in lengths]))


def _qkv(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, HEADS, N, DIM, generator=gen, requires_grad=True) for _ in range(3)]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The walks' tables compacted since the test began: one entry per table build."""
    made: list[str] = []
    compact, compact_documents = runtime.compacted, runtime.compacted_documents

    def counted(kind: torch.Tensor, transpose: bool):
        made.append("columns" if transpose else "rows")
        return compact(kind, transpose)

    def counted_documents(labels: torch.Tensor, kind: torch.Tensor | None, block_m: int, block_n: int, transpose: bool):
        made.append("columns" if transpose else "rows")
        return compact_documents(labels, kind, block_m, block_n, transpose)

    monkeypatch.setattr(runtime, "compacted", counted)
    monkeypatch.setattr(runtime, "compacted_documents", counted_documents)
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
    assert built > 0, "the first call built no tables: the count watches nothing"
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
    assert built > 0, "the first call built no tables: the count watches nothing"
    _close(_layer(pattern, None, 1), _layer(pattern, None, 1, backend="cpu"))
    assert len(builds) == 2 * built


def test_reuse_can_be_turned_off_and_a_bad_setting_is_named(builds: list[str], monkeypatch) -> None:
    pattern, documents = _pattern(DOCUMENTS_WINDOW), _documents([30, 40, 26], [96])
    monkeypatch.setenv(REUSE_LAYOUT, "0")
    _layer(pattern, documents, 0)
    built = len(builds)
    assert built > 0, "the first call built no tables: the count watches nothing"
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


def test_inference_mode_calls_use_what_was_built_outside_and_keep_nothing(builds: list[str]) -> None:
    """A reference pass under inference mode, then a training pass on the same batch (and back): the
    training pass's backward must not meet inference tensors."""
    pattern, documents = _pattern(DOCUMENTS_WINDOW), _documents([30, 40, 26], [96])
    q, k, v = (x.detach() for x in _qkv(0))
    with torch.inference_mode():
        maskc.attention(q, k, v, pattern, backend="triton", documents=documents)
    assert len(builds) == 1 and plan_for(pattern).last_documents.held() is None
    _close(_layer(pattern, documents, 1), _layer(pattern, documents, 1, backend="cpu"))
    assert len(builds) == 3  # the forward's rows and the backward's columns walk
    with torch.inference_mode():
        out = maskc.attention(q, k, v, pattern, backend="triton", documents=documents)
    assert len(builds) == 3
    torch.testing.assert_close(out, maskc.attention(q, k, v, pattern, backend="cpu", documents=documents))


def test_patterns_and_head_counts_sharing_documents_keep_their_own(builds: list[str]) -> None:
    """Two patterns alternating on one documents tensor, and one pattern called with other head counts."""
    window, sinks = _pattern(DOCUMENTS_WINDOW), _pattern(PER_DOCUMENT_SINKS)
    documents = _documents([30, 40, 26], [96])
    for pattern in (window, sinks, window, sinks):
        _close(_layer(pattern, documents, 0), _layer(pattern, documents, 0, backend="cpu"))
    assert len(builds) == 4  # each pattern's two walks, once
    any_heads = _pattern(DOCUMENTS_WINDOW, heads=1)  # one pattern for every head: calls of any head count
    q = torch.randn(2, 4, N, DIM, generator=torch.Generator().manual_seed(9))
    for heads in (4, 1, 4, 1):
        x = q[:, :heads]
        want = maskc.attention(x, x, x, any_heads, backend="cpu", documents=documents)
        torch.testing.assert_close(maskc.attention(x, x, x, any_heads, backend="triton", documents=documents), want)
    assert len(builds) == 6  # one rows walk for each head count


def test_a_freed_documents_tensor_drops_its_layout(builds: list[str]) -> None:
    pattern, documents = _pattern(DOCUMENTS_WINDOW), _documents([30, 40, 26], [96])
    _layer(pattern, documents, 0)
    memo = plan_for(pattern).last_documents
    assert memo.held() is not None
    del documents
    gc.collect()
    assert memo.held() is None


def test_compiled_calls_keep_nothing(builds: list[str]) -> None:
    """Under torch.compile the op builds per call: a compiled graph may refill one tensor object with
    other values without moving its version, so nothing it makes is remembered."""
    pattern, documents = _pattern(DOCUMENTS_WINDOW), _documents([30, 40, 26], [96])
    q, k, v = (x.detach() for x in _qkv(0))
    compiled = torch.compile(lambda a, b, c, d: maskc.attention(a, b, c, pattern, backend="triton", documents=d))
    for _ in range(2):
        torch.testing.assert_close(
            compiled(q, k, v, documents), maskc.attention(q, k, v, pattern, backend="cpu", documents=documents)
        )
    assert plan_for(pattern).last_documents.held() is None
    assert len(builds) == 2
