"""Every spec in specs/: loads, compiles at its own n, means what the spec language says, verifies and runs."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from specgen import brute_force_mask, small_version

import maskc
from maskc.catalogue import catalogue_specs
from maskc.clustering import resolve_dynamic
from maskc.errors import MaskcWarning
from maskc.verify import verify

SPECS = catalogue_specs()
IDS = [path.stem for path, _ in SPECS]
STATIC = [(path, spec) for path, spec in SPECS if not spec.is_dynamic()]
#: Small n for exact checks: not a multiple of any block size, large enough for every spec's parameters.
SMALL_N = 300


@pytest.fixture(autouse=True)
def _quiet_empty_rows():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        yield


def test_catalogue_holds_the_literature() -> None:
    names = {path.stem for path, _ in SPECS}
    wanted = {
        "longformer",
        "longformer_dilated",
        "longformer_growing",
        "bigbird",
        "sparse_transformer_strided",
        "sparse_transformer_strided_heads",
        "sparse_transformer_fixed",
        "sparse_transformer_fixed_heads",
        "mistral_swa",
        "streaming_llm",
        "hybrid_local_global",
        "jamba",
        "minimax",
        "axial_64x64",
        "block_local",
        "dilated_window",
        "routing_transformer",
        "reformer",
    }
    assert wanted <= names


@pytest.mark.parametrize(("path", "spec"), SPECS, ids=IDS)
def test_spec_documents_its_source(path: Path, spec: maskc.Spec) -> None:
    lines = path.read_text().splitlines()
    header = " ".join(line for line in lines[: next(k for k, line in enumerate(lines) if not line.startswith("#"))])
    assert lines[0].startswith("# ") and re.search(r"\b(19|20)\d\d\b", header), "a comment names model and paper"
    assert spec.description and spec.seq_len


@pytest.mark.parametrize(("path", "spec"), SPECS, ids=IDS)
def test_compiles_at_its_own_length(path: Path, spec: maskc.Spec) -> None:
    for _, pattern in maskc.compile_layers(spec):
        assert pattern.n == spec.seq_len
        assert pattern.heads == (spec.heads or 1)
        assert all(layout.nnz > 0 or layout.rule.dynamic for layout in pattern.layouts)


@pytest.mark.parametrize(("path", "spec"), STATIC, ids=[path.stem for path, _ in STATIC])
def test_static_spec_matches_brute_force(path: Path, spec: maskc.Spec) -> None:
    spec, n = small_version(spec, SMALL_N)
    for _, layer in spec.layer_schedule():
        got = maskc.compile(layer, seq_len=n, block_size=32).to_dense()
        want = brute_force_mask(layer.to_data(), n)
        assert np.array_equal(got, want), f"{path.stem}: layer pattern differs from the brute-force mask"


@pytest.mark.parametrize(("path", "spec"), SPECS, ids=IDS)
def test_verifies_at_small_n(path: Path, spec: maskc.Spec) -> None:
    spec, n = small_version(spec, SMALL_N)
    report = verify(spec, layers=sum(e.count for e in spec.layers) or 2, seq_len=n)
    assert report.dynamic_ignored == spec.is_dynamic()
    if path.stem not in ("block_local", "reformer"):
        assert report.min_layers is not None, f"{path.stem} never connects at n = {n}"


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """float64 dense masked softmax attention; rows without a key give zeros."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    allowed = torch.from_numpy(mask)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    return weights @ v


@pytest.mark.parametrize(("path", "spec"), SPECS, ids=IDS)
def test_runs_on_the_cpu_backend(path: Path, spec: maskc.Spec) -> None:
    spec, n = small_version(spec, 160)
    heads = spec.heads or 1
    gen = torch.Generator().manual_seed(0)
    kv_heads = heads // 2 if heads % 2 == 0 else heads
    q = torch.randn(1, heads, n, 16, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(1, kv_heads, n, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    pattern = maskc.compile(spec, seq_len=n)
    out = maskc.attention(q, k, v, pattern, backend="cpu")
    if spec.is_dynamic():  # the mask follows the clusters of q and k (tests/test_clustering.py checks them)
        resolved = resolve_dynamic(pattern, q, k)[0]
        mask = np.stack([resolved.layout_of_head(h).to_dense() for h in range(heads)])
    else:
        mask = brute_force_mask(spec.to_data(), n)
    assert torch.allclose(out, _reference(q, k, v, mask), rtol=1e-10, atol=1e-12)
