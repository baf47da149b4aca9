"""Clusters in sorted order on the Triton backend (TRITON_INTERPRET=1 on the CPU): the device tile tables
cover exactly the cluster mask, outputs, lse and gradients match the CPU reference and a float64 dense
attention over a mask computed here by hand; the resolution path reads nothing back to the host;
given centroids (`maskc.nn.ClusterCentroids`) and their moving average."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from test_backend_triton import interpreter  # noqa: F401 - the module's TRITON_INTERPRET=1 fixture
from test_runtime_triton import _relative, _run

import maskc
from maskc.backends.triton.clusters import cluster_inputs, runs_in_cluster_order, sorted_pattern
from maskc.backends.triton.runtime import CallInputs, StaticMaps, runtime_tables, tile_kinds
from maskc.cluster_order import order_keys, sorting_leaf
from maskc.clustering import cluster_labels
from maskc.errors import BackendError, MaskcWarning
from maskc.grid import TileGrid
from maskc.nn import ClusterCentroids

TOLERANCE = 1e-4
D = 16


def _pattern(spec: dict, n: int, heads: int, tile: tuple[int, int] = (16, 16)) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate({"name": "clusters", **spec}), seq_len=n, heads=heads,
                             block_size=tile)  # fmt: skip


def _spec(method: str, clusters: int, causal: bool, before: int | None = None) -> dict:
    cluster = {"cluster": {"clusters": clusters, "method": method}}
    if before is None:
        return {"causal": causal, "pattern": cluster}
    return {"causal": causal, "pattern": {"intersect": [cluster, {"window": {"before": before, "after": 4}}]}}


def _inputs(batch: int, heads: int, kv_heads: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n, D, generator=gen)
    return [q, *(torch.randn(batch, kv_heads, n, D, generator=gen) for _ in range(2))]


def _hand_mask(q_labels: np.ndarray, k_labels: np.ndarray, causal: bool, before: int | None) -> np.ndarray:
    """The cluster mask of one (batch, head), written out: same label, then causal and the window."""
    n = len(q_labels)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    mask = q_labels[:, None] == k_labels[None, :]
    if causal:
        mask &= j <= i
    if before is not None:
        mask &= (j - i >= -before) & (j - i <= 4)
    return mask


def _dense(q, k, v, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 softmax attention under masks (B, H, N, N); rows without keys give 0 and lse −inf."""
    group = q.shape[1] // k.shape[1]
    k, v = (x.double().repeat_interleave(group, dim=1) for x in (k, v))
    scores = q.double() @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~torch.as_tensor(np.array(masks)), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.where(torch.isfinite(lse)[..., None], torch.exp(scores - lse[..., None]), 0.0)
    return weights @ v, lse


CASES = [
    ("kmeans", 4, True, None, 2, 2),
    ("lsh", 4, True, None, 4, 2),
    ("kmeans", 3, True, 20, 2, 1),
    ("lsh", 6, False, 24, 2, 2),
]


@pytest.mark.parametrize(("method", "clusters", "causal", "before", "heads", "kv_heads"), CASES)
def test_sorted_clusters_match_the_reference_and_dense_float64(method, clusters, causal, before, heads, kv_heads):
    n = 56
    pattern = _pattern(_spec(method, clusters, causal, before), n, heads)
    assert runs_in_cluster_order(pattern)
    q, k, v = _inputs(2, heads, kv_heads, n)
    got = _run(pattern, q, k, v, "triton")
    want = _run(pattern, q, k, v, "cpu")
    for name, a, b in zip(["out", "lse", "dq", "dk", "dv"], got, want):
        assert _relative(a, b) < TOLERANCE, name
    params = sorting_leaf(pattern).params
    q_labels, k_labels = cluster_labels(params, q, k.repeat_interleave(heads // kv_heads, dim=1))
    masks = np.stack([
        np.stack([_hand_mask(q_labels[b, h].numpy(), k_labels[b, h].numpy(), causal, before) for h in range(heads)])
        for b in range(2)
    ])  # fmt: skip
    out, lse = _dense(q, k, v, masks)
    assert _relative(got[0], out) < TOLERANCE and _relative(got[1], lse) < TOLERANCE


def _sorted_tiles(pattern, q, k, tile: tuple[int, int], centroids=None):
    """The sorted grid's (stored, full) maps from its kinds, and the call's values."""
    values = cluster_inputs(pattern, q, k, None, centroids)
    rule = sorted_pattern(pattern).layouts[0].rule
    grid = TileGrid(pattern.n, *tile)
    inputs = CallInputs(q.shape[0], q.shape[1], pattern.n, values)
    kinds = tile_kinds(rule, grid, inputs, StaticMaps(), q.device)
    return kinds >= 1, kinds == 2, values, grid


@pytest.mark.parametrize("tile", [(16, 16), (32, 16), (16, 8)])
def test_sorted_tiles_cover_the_mask_and_full_tiles_lie_inside(tile):
    """Every pair of the permuted mask lies in a stored tile, every full tile holds only pairs; the
    stable sort keeps original positions increasing inside each cluster (causality kept)."""
    n, heads = 96, 2
    pattern = _pattern(_spec("kmeans", 6, True, 40), n, heads)
    q, k, _ = _inputs(2, heads, 1, n, seed=3)
    any_, full, values, grid = _sorted_tiles(pattern, q, k, tile)
    leaf = sorting_leaf(pattern)
    q_labels, k_labels = cluster_labels(leaf.params, q, k.expand(-1, heads, -1, -1))
    q_order, k_order = (values[key].long() for key in order_keys(leaf))
    for b in range(2):
        for h in range(heads):
            qo, ko = q_order[b, h].numpy(), k_order[b, h].numpy()
            ql = q_labels[b, h].numpy()
            assert all(np.all(np.diff(qo[ql[qo] == c]) > 0) for c in range(6))
            mask = _hand_mask(ql, k_labels[b, h].numpy(), True, 40)[qo][:, ko]
            padded = np.zeros((grid.row_tiles * tile[0], grid.col_tiles * tile[1]), dtype=bool)
            padded[:n, :n] = mask
            blocks = padded.reshape(grid.row_tiles, tile[0], grid.col_tiles, tile[1])
            has, every = blocks.any(axis=(1, 3)), blocks.all(axis=(1, 3))
            stored, complete = any_[b, h].numpy(), full[b, h].numpy()
            assert not np.any(has & ~stored), "a pair outside the stored tiles"
            inside = np.ones_like(complete)
            inside[-1, :] = n % tile[0] == 0  # tiles over the edge are never all pairs in `padded`
            inside[:, -1] &= n % tile[1] == 0
            assert not np.any(complete & inside & ~every), "a full tile with a pair outside the mask"
            assert not np.any(complete & ~has)


def test_sorting_stores_fewer_tiles_than_token_order():
    """Clustered data in token order touches most tiles; sorted, only the segments' tiles are stored."""
    n, heads = 256, 1
    pattern = _pattern(_spec("kmeans", 8, False), n, heads)
    q, k, _ = _inputs(1, heads, 1, n, seed=1)
    any_, _, _, _ = _sorted_tiles(pattern, q, k, (16, 16))
    values = CallInputs.prepare([pattern.layouts[0].rule], q, k, None).values
    token_order = tile_kinds(pattern.layouts[0].rule, TileGrid(n, 16, 16), CallInputs(1, 1, n, values),
                             StaticMaps(), q.device) >= 1  # fmt: skip
    assert int(any_.sum()) < int(token_order.sum()) // 2


def test_patterns_whose_pairs_may_leave_a_cluster_run_in_token_order():
    union = {"causal": True, "pattern": [{"cluster": {"clusters": 4}}, {"window": {"before": 4}}]}
    assert not runs_in_cluster_order(_pattern(union, 32, 1))
    difference = {"pattern": {"difference": [{"cluster": {"clusters": 4}}, {"window": {"size": 3}}]}}
    assert runs_in_cluster_order(_pattern(difference, 32, 1))
    assert not runs_in_cluster_order(_pattern({"causal": True, "pattern": {"window": {"before": 4}}}, 32, 1))


def test_difference_inside_a_cluster_matches_the_reference():
    spec = {"causal": True, "pattern": {"difference": [{"cluster": {"clusters": 4, "method": "lsh"}},
                                                       {"window": {"before": 2, "after": 0}}]}}  # fmt: skip
    pattern = _pattern(spec, 40, 2, (16, 16))
    q, k, v = _inputs(1, 2, 2, 40, seed=4)
    for a, b in zip(_run(pattern, q, k, v, "triton"), _run(pattern, q, k, v, "cpu")):
        assert _relative(a, b) < TOLERANCE


def _one_direction(batch: int, heads: int, n: int) -> torch.Tensor:
    """Vectors all on the positive side of the first axis."""
    x = torch.randn(batch, heads, n, D, generator=torch.Generator().manual_seed(2))
    x[..., 0] = x[..., 0].abs() + 3.0
    return x


def test_empty_clusters_and_one_cluster_holding_every_position():
    """Centroids that attract nothing leave empty clusters; when one cluster holds every position, the
    tables hold every tile of causal attention (the reserved capacity is the whole grid, so it fits)."""
    n, heads = 48, 2
    pattern = _pattern(_spec("kmeans", 4, True), n, heads)
    centroids = torch.zeros(heads, 4, D)
    centroids[:, 0, 0] = 1.0  # every vector below has a positive first coordinate: all in cluster 0
    centroids[:, 1, 0] = -1.0
    centroids[:, 2, 1] = -1.0
    centroids[:, 3, 0] = -1.0
    centroids[:, 3, 2] = 1.0
    q, k = _one_direction(1, heads, n), _one_direction(1, heads, n) * 0.5
    v = torch.randn(1, heads, n, D)
    any_, _, values, grid = _sorted_tiles(pattern, q, k, (16, 16), centroids)
    leaf = sorting_leaf(pattern)
    assert torch.all(values[f"q_labels:{leaf.origin}"] == 0)
    causal_tiles = grid.row_tiles * (grid.row_tiles + 1) // 2
    assert int(any_[0, 0].sum()) == causal_tiles
    tables = runtime_tables([sorted_pattern(pattern).layouts[0].rule], pattern.head_layout, grid, "rows",
                            CallInputs(1, heads, n, values), StaticMaps(), q.device)  # fmt: skip
    assert tables.walk.full_idx.numel() + tables.walk.partial_idx.numel() == 2 * heads * grid.row_tiles**2
    got = _run(pattern, q, k, v, "triton", centroids=centroids)
    want = _run(pattern, q, k, v, "cpu", centroids=centroids)
    for a, b in zip(got, want):
        assert _relative(a, b) < TOLERANCE
    # with four clusters of which three are empty, dense causal attention is the answer
    masks = np.broadcast_to(np.tril(np.ones((n, n), dtype=bool)), (1, heads, n, n))
    out, _ = _dense(q, k, v, masks)
    assert _relative(got[0], out) < TOLERANCE


def test_given_centroids_match_the_reference_with_grouped_heads():
    n, heads = 40, 4
    pattern = _pattern(_spec("kmeans", 5, True, 16), n, heads)
    q, k, v = _inputs(2, heads, 2, n, seed=7)
    centroids = torch.randn(heads, 5, D, generator=torch.Generator().manual_seed(8))
    got = _run(pattern, q, k, v, "triton", centroids=centroids)
    want = _run(pattern, q, k, v, "cpu", centroids=centroids)
    for a, b in zip(got, want):
        assert _relative(a, b) < TOLERANCE
    labels = cluster_labels(sorting_leaf(pattern).params, q, k.repeat_interleave(2, dim=1), centroids=centroids)
    nearest = (torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(centroids, dim=-1)
               .transpose(1, 2)).argmax(-1)  # fmt: skip
    assert torch.equal(labels[0], nearest)


def test_bad_centroids_are_refused_by_both_backends():
    n = 32
    q, k, v = _inputs(1, 2, 2, n)
    kmeans = _pattern(_spec("kmeans", 4, True), n, 2)
    lsh = _pattern(_spec("lsh", 4, True), n, 2)
    static = _pattern({"causal": True, "pattern": {"window": {"before": 4}}}, n, 2)
    for backend in ("cpu", "triton"):
        with pytest.raises(BackendError, match=r"shape \(heads, clusters, D\)"):
            maskc.attention(q, k, v, kmeans, backend=backend, centroids=torch.randn(2, 3, D))
        with pytest.raises(BackendError, match="lsh"):
            maskc.attention(q, k, v, lsh, backend=backend, centroids=torch.randn(2, 4, D))
        with pytest.raises(BackendError, match="no cluster leaf"):
            maskc.attention(q, k, v, static, backend=backend, centroids=torch.randn(2, 4, D))


def test_the_device_resolution_path_reads_nothing_back(monkeypatch):
    """Assignment (k-means fit and LSH), sort and tile tables with every host read of a tensor refused.

    The k-means++ uniforms and the LSH rotation are constants of the spec (seed, clusters, D): a
    first call draws them on the host once; the check is on the calls after.
    """
    n, heads = 64, 2
    patterns = [_pattern(_spec(method, 4, True, 20), n, heads) for method in ("kmeans", "lsh")]
    q, k, _ = _inputs(2, heads, 1, n)
    for pattern in patterns:
        cluster_inputs(pattern, q, k, None, None)

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read back to the host")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for pattern in patterns:
        values = cluster_inputs(pattern, q, k, None, None)
        runtime_tables([sorted_pattern(pattern).layouts[0].rule], pattern.head_layout, TileGrid(n, 16, 16), "rows",
                       CallInputs(2, heads, n, values), StaticMaps(), q.device)  # fmt: skip


def test_torch_compile_traces_sorted_clusters_in_one_graph():
    maskc.available_backends()
    pattern = _pattern(_spec("lsh", 4, True, 20), 48, 2)
    q, k, v = (torch.randn(1, 2, 48, D, requires_grad=True) for _ in range(3))

    def step(q, k, v):
        return maskc.attention(q * 2, k, v, pattern, backend="triton").square().mean()

    loss = torch.compile(step, backend="aot_eager", fullgraph=True)(q, k, v)
    loss.backward()
    compiled = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    want = step(q, k, v)
    want.backward()
    assert torch.allclose(loss, want)
    assert all(torch.allclose(a, x.grad, atol=1e-6) for a, x in zip(compiled, (q, k, v)))


def test_ema_update_matches_a_hand_computation():
    """Two centroids on the axes of the plane, four vectors: the means of each side, then the average."""
    module = ClusterCentroids(heads=1, clusters=3, head_dim=2, decay=0.75)
    module.centroids.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]]))
    q = torch.tensor([[[[2.0, 0.5], [0.2, 3.0]]]])  # (1, 1, 2, 2): nearest 0, then 1
    k = torch.tensor([[[[1.0, -0.2], [0.0, 1.0]]]])  # nearest 0, then 1; centroid 2 gets nothing
    module.update(q, k)
    unit = lambda x: np.asarray(x) / np.linalg.norm(x)  # noqa: E731
    mean0 = (unit([2.0, 0.5]) + unit([1.0, -0.2])) / 2
    mean1 = (unit([0.2, 3.0]) + unit([0.0, 1.0])) / 2
    want = np.stack([unit(0.75 * np.array([1.0, 0.0]) + 0.25 * mean0),
                     unit(0.75 * np.array([0.0, 1.0]) + 0.25 * mean1), [-1.0, 0.0]])  # fmt: skip
    assert np.allclose(module.centroids[0].numpy(), want, atol=1e-6)


def test_sparse_attention_module_uses_and_updates_its_centroids():
    n, heads = 32, 2
    spec = maskc.Spec.model_validate({"name": "routing", **_spec("kmeans", 4, True)})
    centroids = ClusterCentroids(heads=heads, clusters=4, head_dim=D, decay=0.5)
    layer = maskc.nn.SparseAttention(spec, n, heads=heads, backend="cpu", centroids=centroids)
    q, k, v = _inputs(1, heads, heads, n)
    before = centroids.centroids.clone()
    want = maskc.attention(q, k, v, layer.pattern, backend="cpu", centroids=before)
    layer.eval()
    assert torch.allclose(layer(q, k, v), want)
    assert torch.equal(centroids.centroids, before)
    layer.train()
    layer(q, k, v)
    assert not torch.equal(centroids.centroids, before)
    assert torch.allclose(centroids.centroids.norm(dim=-1), torch.ones(heads, 4))
    assert "centroids.centroids" in layer.state_dict()


def test_clusters_inside_documents_match_the_reference():
    """A cluster intersected with packed documents runs in cluster order: the predicate reads the
    document ids at original positions."""
    n, heads = 60, 2
    spec = {"causal": True, "pattern": {"intersect": [{"document": {}}, {"cluster": {"clusters": 4, "method": "lsh"}}]}}
    pattern = _pattern(spec, n, heads)
    assert runs_in_cluster_order(pattern)
    documents = torch.as_tensor(np.stack([maskc.ids_from_lengths([25, 35]), maskc.ids_from_lengths([7, 40, 13])]))
    q, k, v = _inputs(2, heads, 1, n, seed=9)
    got = _run(pattern, q, k, v, "triton", documents)
    want = _run(pattern, q, k, v, "cpu", documents)
    for a, b in zip(got, want):
        assert _relative(a, b) < TOLERANCE
