"""Property: the device tables of a pattern run in cluster order cover exactly its mask, permuted.

Random cluster-bounded specs (a cluster alone, intersected with a window or a sink set, or minus a
window; causal or not; kmeans or lsh), random q and k on four query heads over two key heads: the
CPU resolution's masks (`resolve_dynamic`, the reference), permuted by the call's stable orders,
must lie in the stored tiles of both walks, and no tile called full may miss a pair.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)
from specgen import tile_shapes
from test_runtime_tables import _check_tables

import maskc
from maskc.backends.triton.clusters import cluster_inputs, sorted_pattern
from maskc.backends.triton.runtime import CallInputs, StaticMaps, runtime_tables
from maskc.cluster_order import order_keys, sorting_leaf
from maskc.clustering import resolve_dynamic
from maskc.errors import MaskcWarning
from maskc.grid import TileGrid


@st.composite
def cluster_bounded_specs(draw: st.DrawFn) -> dict:
    method = draw(st.sampled_from(["kmeans", "lsh"]))
    cluster = {"cluster": {"clusters": draw(st.sampled_from([2, 4, 6])), "method": method,
                           "seed": draw(st.integers(0, 9))}}  # fmt: skip
    window = {"window": {"before": draw(st.integers(0, 30)), "after": draw(st.integers(0, 30))}}
    body = draw(
        st.sampled_from(
            [
                cluster,
                {"intersect": [cluster, window]},
                {"intersect": [window, cluster]},
                {"difference": [cluster, {"window": {"size": draw(st.integers(1, 9))}}]},
                {"intersect": [cluster, {"sink": {"count": draw(st.integers(1, 5))}}]},
            ]
        )
    )
    return {"name": "bounded", "causal": draw(st.booleans()), "pattern": body}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_bounded_specs(), st.integers(6, 90), tile_shapes(), st.integers(0, 2**16))
def test_sorted_tables_cover_the_permuted_reference_mask(spec: dict, n: int, tile: tuple[int, int], seed: int):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 4, n, 8, generator=gen), torch.randn(2, 2, n, 8, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec.model_validate(spec), seq_len=n, heads=4, block_size=tile)
        resolved = resolve_dynamic(pattern, q, k)
    assert sorting_leaf(pattern) is not None
    values = cluster_inputs(pattern, q, k, None, None)
    q_order, k_order = (values[key].numpy() for key in order_keys(sorting_leaf(pattern)))
    masks = np.stack([
        np.stack([p.layout_of_head(h).to_dense()[q_order[b, h]][:, k_order[b, h]] for h in range(4)])
        for b, p in enumerate(resolved)
    ])  # fmt: skip
    rules = [layout.rule for layout in sorted_pattern(pattern).layouts]
    grid = TileGrid(n, *tile)
    inputs = CallInputs(2, 4, n, values)
    for walk in ("rows", "columns"):
        tables = runtime_tables(rules, pattern.head_layout, grid, walk, inputs, StaticMaps(), q.device)
        _check_tables(pattern, masks, grid, tables, walk)
