"""Run-time clusters: seeded assignments, and resolved patterns equal to brute-force "same label" masks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import maskc
from maskc.clustering import cluster_labels, resolve_dynamic, torch_nearest_direction
from maskc.errors import BackendError, MaskcWarning, SpecError

N, D = 192, 16


def _tensors(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(autouse=True)
def _quiet_empty_rows():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        yield


@pytest.mark.parametrize("method", ["kmeans", "lsh"])
def test_labels_are_seeded_and_in_range(method: str) -> None:
    q, k = _tensors(2, 3, N, D, seed=1), _tensors(2, 3, N, D, seed=2)
    params = maskc.Cluster(clusters=8, method=method, seed=5)
    first, again = cluster_labels(params, q, k), cluster_labels(params, q.clone(), k.clone())
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    for labels in first:
        assert labels.shape == (2, 3, N) and labels.dtype == torch.int64
        assert labels.min() >= 0 and labels.max() < 8
    other = cluster_labels(params.model_copy(update={"seed": 6}), q, k)
    assert not all(torch.equal(a, b) for a, b in zip(first, other)), "the seed changes the assignment"


def test_kmeans_recovers_separated_clusters() -> None:
    """Points scattered tightly around 6 directions: k-means puts each direction in its own cluster."""
    centres = torch.nn.functional.normalize(_tensors(6, D, seed=3), dim=-1)
    which = torch.randint(0, 6, (2 * N,), generator=torch.Generator().manual_seed(4))
    points = centres[which] + 0.01 * _tensors(2 * N, D, seed=5)
    q, k = points[:N][None], points[N:][None]
    q_labels, k_labels = cluster_labels(maskc.Cluster(clusters=6, method="kmeans", iterations=10), q, k)
    labels = torch.cat([q_labels[0], k_labels[0]])
    pairs = {(int(w), int(lab)) for w, lab in zip(which, labels)}
    assert len(pairs) == 6 and len({lab for _, lab in pairs}) == 6, "one cluster per direction, one direction each"


def test_lsh_buckets_antipodes_half_a_turn_apart() -> None:
    """bucket = argmax([xR, −xR]) puts −x in bucket (b + c/2) mod c, and scaling x changes nothing."""
    x = _tensors(1, 1, N, D, seed=6)
    params = maskc.Cluster(clusters=10, method="lsh", seed=2)
    labels, negated = cluster_labels(params, x, -x)
    assert torch.equal(negated, (labels + 5) % 10)
    assert torch.equal(cluster_labels(params, 3.0 * x, x)[0], labels)


def test_half_precision_inputs_give_the_float32_labels() -> None:
    q, k = _tensors(1, 2, N, D, seed=7).bfloat16(), _tensors(1, 2, N, D, seed=8).bfloat16()
    params = maskc.Cluster(clusters=8, method="kmeans")
    low = cluster_labels(params, q, k)
    high = cluster_labels(params, q.float(), k.float())
    assert all(torch.equal(a, b) for a, b in zip(low, high))


def _spec(method: str, *, causal: bool, heads: int) -> maskc.Spec:
    return maskc.Spec(
        name="clusters",
        causal=causal,
        heads=heads,
        pattern=[maskc.Cluster(clusters=6, method=method, seed=3), maskc.Window(before=2, after=0)],
        head_patterns=[{"heads": [0], "pattern": {"window": {"before": 4, "after": 4}}}],
    )


@pytest.mark.parametrize(("method", "causal"), [("kmeans", True), ("lsh", False), ("kmeans", False)])
def test_resolved_pattern_is_the_same_label_mask(method: str, causal: bool) -> None:
    """Per (batch, head): label equality ∪ window, ∩ causal; head 0 (static) keeps its own pattern; GQA maps heads."""
    heads, kv_heads = 4, 2
    spec = _spec(method, causal=causal, heads=heads)
    pattern = maskc.compile(spec, seq_len=N, block_size=32)
    q, k = _tensors(2, heads, N, D, seed=9), _tensors(2, kv_heads, N, D, seed=10)
    resolved = resolve_dynamic(pattern, q, k)
    params = spec.pattern.of[0]
    i, j = np.arange(N)[:, None], np.arange(N)[None, :]
    causal_mask = j <= i if causal else np.ones((N, N), dtype=bool)
    for b in range(2):
        assert not resolved[b].dynamic and resolved[b].heads == heads
        assert np.array_equal(resolved[b].head_layout, np.arange(heads))
        assert np.array_equal(resolved[b].layout_of_head(0).to_dense(), (np.abs(i - j) <= 4) & causal_mask)
        for h in range(1, heads):
            q_labels, k_labels = cluster_labels(params, q[b, h], k[b, h // (heads // kv_heads)])
            same = q_labels.numpy()[:, None] == k_labels.numpy()[None, :]
            want = (same | ((i - j >= 0) & (i - j <= 2))) & causal_mask
            assert np.array_equal(resolved[b].layout_of_head(h).to_dense(), want), (b, h)


def test_static_pattern_needs_no_resolving() -> None:
    pattern = maskc.compile(maskc.Spec(name="w", pattern=maskc.Window(size=8)), seq_len=64)
    q = _tensors(3, 1, 64, D)
    assert resolve_dynamic(pattern, q, q) == [pattern] * 3


def test_bad_inputs_are_named() -> None:
    pattern = maskc.compile(_spec("kmeans", causal=True, heads=4), seq_len=N)
    with pytest.raises(BackendError, match="compiled for n = 192"):
        resolve_dynamic(pattern, _tensors(1, 4, 100, D), _tensors(1, 4, 100, D))
    with pytest.raises(BackendError, match="compiled for 4 heads"):
        resolve_dynamic(pattern, _tensors(1, 2, N, D), _tensors(1, 2, N, D))
    with pytest.raises(BackendError, match="not a multiple"):
        resolve_dynamic(pattern, _tensors(1, 4, N, D), _tensors(1, 3, N, D))
    with pytest.raises(SpecError, match=r"bad.yaml:2: pattern.cluster: .*clusters must be even"):
        maskc.parse_spec("name: odd\npattern: {cluster: {clusters: 7, method: lsh}}\n", source="bad.yaml")
    many = maskc.Spec(name="many", pattern=maskc.Cluster(clusters=100, method="kmeans"))
    with pytest.raises(SpecError, match="100 clusters from only 64"):
        resolve_dynamic(maskc.compile(many, seq_len=32), _tensors(1, 1, 32, D), _tensors(1, 1, 32, D))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_and_triton_agree_from_the_same_assignments() -> None:
    """One resolution on the GPU; the CPU and Triton backends run it and agree up to rounding."""
    spec = maskc.load(Path(__file__).resolve().parent.parent / "specs" / "routing_transformer.yaml")
    pattern = maskc.compile(spec, seq_len=4096)
    q, k, v = (_tensors(1, 8, 4096, 64, seed=s).cuda() for s in (11, 12, 13))
    (resolved,) = resolve_dynamic(pattern, q, k)
    on_gpu = maskc.attention(q, k, v, resolved, backend="triton")
    on_cpu = maskc.attention(q.cpu().double(), k.cpu().double(), v.cpu().double(), resolved, backend="cpu")
    assert torch.allclose(on_gpu.cpu().double(), on_cpu, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("signed", [False, True])
def test_equal_directions_tie_to_the_lower_label_per_group(signed: bool) -> None:
    """Each group's copies of a direction (at columns 5 to 9, where this CPU's matrix product rounds
    some apart) score alike: a point nearest to a copied direction takes the first copy's label."""
    gen = torch.Generator().manual_seed(3)
    base = torch.nn.functional.normalize(torch.randn(2, 5, 16, generator=gen), dim=-1)
    copies = [[0, 1, 2, 3, 4], [4, 4, 3, 2, 1]]
    directions = torch.stack([torch.cat([base[g], base[g, copies[g]]]) for g in range(2)])
    x = torch.randn(2, 200, 16, generator=torch.Generator().manual_seed(4))
    labels = torch_nearest_direction(x, directions, signed)
    scores = torch.einsum("gpd,gmd->gpm", x.double(), base.double())  # each direction once, in float64
    want = (torch.cat([scores, -scores], dim=-1) if signed else scores).argmax(dim=-1)
    if signed:  # the negatives of the copies are labels 10 to 14: the first copies' are 5 to 9
        want = torch.where(want >= 5, want + 5, want)
    assert torch.equal(labels, want)
