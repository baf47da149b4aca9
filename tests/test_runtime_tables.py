"""Run-time tile tables built on the device (the Triton backend's documents, top-k and cluster path; its
compaction kernels in Triton's interpreter) against the host resolution: every non-empty tile is stored,
every tile called full is full, tables are well formed."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)
from specgen import document_spec_dicts, tile_shapes

import maskc
from maskc.backends.triton.compaction import (
    BLOCK_L,
    BLOCK_W,
    compact_document_kinds,
    compact_kinds,
    compacted,
    compacted_documents,
)
from maskc.backends.triton.runtime import CallInputs, RuntimeTables, StaticMaps, runtime_tables, tile_kinds
from maskc.clustering import resolve_dynamic
from maskc.errors import BackendError, MaskcWarning
from maskc.grid import TileGrid

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _maps_from_tables(pointers: np.ndarray, indices: np.ndarray, groups: int, lines: int, width: int) -> np.ndarray:
    out = np.zeros((groups, lines, width), dtype=bool)
    for g in range(groups):
        for line in range(lines):
            lo, hi = pointers[g * (lines + 1) + line], pointers[g * (lines + 1) + line + 1]
            row = indices[lo:hi]
            assert np.all(np.diff(row) > 0), "indices of a line are sorted and distinct"
            out[g, line, row] = True
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.sampled_from([1, 5, BLOCK_L, BLOCK_L + 3]),
    st.sampled_from([1, 7, BLOCK_W + 9]),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_compacted_kinds_list_every_tile_of_each_kind(
    groups: int, rows: int, columns: int, transpose: bool, seed: int
) -> None:
    """Lines past one program's BLOCK_L and widths past one step's BLOCK_W included: full and partial
    lists rebuild the maps exactly, pointers are global offsets, unused capacity is zero, and the
    programs' order is the lines by their tiles over every map, most first, ties in line order."""
    kind = torch.randint(0, 3, (groups, rows, columns), dtype=torch.int8, generator=torch.Generator().manual_seed(seed))
    _check_compaction(kind, transpose)


def _check_compaction(kind: torch.Tensor, transpose: bool) -> None:
    groups = kind.shape[0]
    pointers, indices, order = compact_kinds(kind, transpose)
    maps = kind.transpose(1, 2) if transpose else kind
    lines, width = maps.shape[1:]
    assert pointers.shape == (2, groups * (lines + 1)) and indices.shape == (2, groups * lines * width)
    for at, level in enumerate((2, 1)):
        expected = (maps == level).numpy()
        rebuilt = _maps_from_tables(pointers[at].numpy(), indices[at].numpy(), groups, lines, width)
        assert np.array_equal(rebuilt, expected)
        stored = int(expected.sum())
        assert int(pointers[at, -1]) == stored and not indices[at, stored:].any()
    lengths = (maps > 0).sum(dim=(0, 2))
    assert torch.equal(order, torch.sort(lengths, descending=True, stable=True).indices.to(torch.int32))


def test_compaction_of_no_table_orders_every_line() -> None:
    """No table: no tiles, and the order is every line in turn (a permutation, as with tables)."""
    pointers, indices, order = compact_kinds(torch.zeros(0, 5, 3, dtype=torch.int8), False)
    assert pointers.numel() == indices.numel() == 0
    assert torch.equal(order, torch.arange(5, dtype=torch.int32))


@pytest.mark.parametrize("transpose", [False, True])
def test_compaction_of_many_lines(transpose: bool) -> None:
    """More lines than one step of the order's ranking (BLOCK_W) and more blocks before a program than
    one step of its scan, with runs of equal lengths (empty and full lines) among random ones."""
    kind = torch.randint(0, 3, (3, 700, 5), dtype=torch.int8, generator=torch.Generator().manual_seed(11))
    kind[:, 100:300] = 0
    kind[1, 400:450] = 2
    _check_compaction(kind, transpose)


def test_compacted_kinds_of_strided_maps() -> None:
    """A map that is a view (a slice of a larger one) is read through its strides."""
    kind = torch.randint(0, 3, (2, 9, 12), dtype=torch.int8, generator=torch.Generator().manual_seed(3))
    view = kind[:, 1:8, ::2]
    for transpose in (False, True):
        got = compact_kinds(view, transpose)
        want = compact_kinds(view.contiguous(), transpose)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_the_compaction_op_passes_torch_library_checks() -> None:
    """Schema, fake tensors (shapes, dtypes, contiguity) and torch.compile's dispatch agree with the op."""
    kind = torch.randint(0, 3, (2, 5, 3), dtype=torch.int8, generator=torch.Generator().manual_seed(4))
    for transpose in (False, True):
        torch.library.opcheck(compact_kinds, (kind, transpose))


def test_eager_compaction_skips_the_op_and_a_tracer_records_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eager calls run the compaction's body directly (no custom op dispatch); under a tracer (make_fx
    here, torch.compile alike) the ops are recorded, so a compiled graph keeps them whole."""
    from torch.fx.experimental.proxy_tensor import make_fx

    kind = torch.randint(0, 3, (2, 5, 3), dtype=torch.int8, generator=torch.Generator().manual_seed(7))
    labels = torch.as_tensor(maskc.ids_from_lengths([3, 4, 2]), dtype=torch.int32)[None]
    fixed = kind[0, :3, :3].contiguous()
    from maskc.backends.triton import compaction

    for transpose in (False, True):
        ops = compact_kinds(kind, transpose), compact_document_kinds(labels, fixed, 4, 3, transpose)
        with monkeypatch.context() as patch:
            for name in ("compact_kinds", "compact_document_kinds"):
                patch.setattr(compaction, name, lambda *args: pytest.fail("an eager call went through the op"))
            eager = compacted(kind, transpose), compacted_documents(labels, fixed, 4, 3, transpose)
        for got, want in zip(eager, ops, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    graph = make_fx(lambda k, x, f: (compacted(k, False), compacted_documents(x, f, 4, 3, True)))(kind, labels, fixed)
    targets = {str(node.target) for node in graph.graph.nodes}
    assert {"maskc.compact_kinds.default", "maskc.compact_document_kinds.default"} <= targets, targets


def test_compacted_kinds_reject_other_dtypes() -> None:
    with pytest.raises(BackendError, match="int8 tile kinds"):
        compact_kinds(torch.zeros(1, 2, 2, dtype=torch.bool), False)


def _document_kinds_by_pairs(ids: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(R, C) kinds of "same document" from every pair of positions: brute force, no spans."""
    same = ids[:, None] == ids[None, :]
    any_true, full_true = _tile_truth(same, grid)
    return any_true.astype(np.int8) + full_true


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=6), min_size=1, max_size=3),
    st.sampled_from([1, 3, 16, 20]),
    st.sampled_from([1, 4, 16, 24]),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_document_kinds_compacted_in_the_kernels_equal_the_brute_force_maps(
    batch_lengths: list[list[int]], block_m: int, block_n: int, with_map: bool, transpose: bool, seed: int
) -> None:
    """`compact_document_kinds` (kinds decided inside the two kernels from the tiles' document spans,
    intersected with a random static map) gives exactly the tables `compact_kinds` gives for the maps
    computed from every pair: tiles of one or many positions, n not a multiple of either side, lines
    past one program's BLOCK_L, several batch rows with different documents."""
    n = max(sum(lengths) for lengths in batch_lengths)
    ids = np.stack(
        [
            maskc.ids_from_lengths([*lengths, n - sum(lengths)] if sum(lengths) < n else lengths)
            for lengths in batch_lengths
        ]
    )
    grid = TileGrid(n, block_m, block_n)
    gen = torch.Generator().manual_seed(seed)
    fixed = torch.randint(0, 3, (grid.row_tiles, grid.col_tiles), dtype=torch.int8, generator=gen)
    maps = torch.stack([torch.as_tensor(_document_kinds_by_pairs(row, grid)) for row in ids])
    if with_map:
        maps = torch.minimum(maps, fixed)
    labels = torch.as_tensor(ids, dtype=torch.int32) * 3  # numbers need only be non-decreasing
    got = compact_document_kinds(labels, fixed if with_map else None, block_m, block_n, transpose)
    want = compact_kinds(maps, transpose)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_document_kinds_read_a_broadcast_map_through_its_strides() -> None:
    """A static map expanded from one row (stride 0) is read as the full map it stands for."""
    labels = torch.as_tensor(maskc.ids_from_lengths([5, 9, 3]), dtype=torch.int32)[None]
    line = torch.tensor([2, 1, 0, 2, 1], dtype=torch.int8)
    for broadcast in (line[None, :].expand(5, 5), line[:, None].expand(5, 5), line[:1, None].expand(5, 5)):
        for transpose in (False, True):
            got = compact_document_kinds(labels, broadcast, 4, 4, transpose)
            want = compact_document_kinds(labels, broadcast.contiguous(), 4, 4, transpose)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("tile", [(1, 1), (16, 1), (3, 2)])
def test_document_kinds_along_lines_wider_than_one_step(tile: tuple[int, int]) -> None:
    """Lines of more than BLOCK_W tiles (tiles of one or two positions), against maps from every pair."""
    lengths = [37, 1, 90, 2, 60, 111]
    ids = maskc.ids_from_lengths(lengths)
    grid = TileGrid(len(ids), *tile)
    assert max(grid.row_tiles, grid.col_tiles) > BLOCK_W
    fixed = torch.randint(
        0, 3, (grid.row_tiles, grid.col_tiles), dtype=torch.int8, generator=torch.Generator().manual_seed(6)
    )
    maps = torch.minimum(torch.as_tensor(_document_kinds_by_pairs(ids, grid)), fixed)[None]
    labels = torch.as_tensor(ids, dtype=torch.int32)[None]
    for transpose in (False, True):
        got = compact_document_kinds(labels, fixed, *tile, transpose)
        assert all(torch.equal(a, b) for a, b in zip(got, compact_kinds(maps, transpose), strict=True))


def test_the_document_compaction_op_passes_torch_library_checks() -> None:
    labels = torch.as_tensor(maskc.ids_from_lengths([3, 4, 2]), dtype=torch.int32)[None].repeat(2, 1)
    fixed = torch.randint(0, 3, (3, 5), dtype=torch.int8, generator=torch.Generator().manual_seed(5))
    for kind in (fixed, None):
        for transpose in (False, True):
            torch.library.opcheck(compact_document_kinds, (labels, kind, 4, 2, transpose))


@pytest.mark.parametrize(
    ("labels", "kind", "message"),
    [
        (torch.zeros(1, 8, dtype=torch.int64), None, "int32 document numbers"),
        (torch.zeros(8, dtype=torch.int32), None, "int32 document numbers"),
        (torch.zeros(1, 8, dtype=torch.int32), torch.zeros(2, 3, dtype=torch.int8), r"\(2, 2\) int8 map"),
        (torch.zeros(1, 8, dtype=torch.int32), torch.zeros(2, 2, dtype=torch.bool), r"\(2, 2\) int8 map"),
    ],
)
def test_document_compaction_rejects_bad_inputs(labels: torch.Tensor, kind: torch.Tensor | None, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        compact_document_kinds(labels, kind, 4, 4, False)


WINDOW = {"window": {"before": 20, "after": 0}}


@pytest.mark.parametrize(
    "pattern",
    [
        {"document": {}},
        {"intersect": [{"document": {}}, WINDOW]},
        {
            "intersect": [
                {"intersect": [{"document": {}}, {"window": {"before": 30, "after": 5}}]},
                {"global": {"first": 3}},
            ]
        },
    ],
    ids=["alone", "with a window", "nested"],
)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("tile", [(16, 16), (16, 32), (64, 16)])
def test_document_forms_build_the_tables_of_the_general_path(
    pattern: dict, causal: bool, tile: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents intersected with static rules take `compact_document_kinds`; their tables equal, array
    for array, those of the general path (tile kinds by torch ops, then `compact_kinds`)."""
    from maskc.backends.triton import runtime

    n = 100
    spec = maskc.Spec.model_validate({"name": "docs", "causal": causal, "pattern": pattern})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        compiled = maskc.compile(spec, seq_len=n, block_size=tile)
    rule = compiled.layouts[0].rule
    assert runtime._static_beside_documents(rule) is not None
    ids = torch.as_tensor(np.stack([maskc.ids_from_lengths([30, 40, 30]), maskc.ids_from_lengths([7, 60, 33])]))
    q = torch.zeros(2, 3, n, 4)

    def tables(walk: str) -> RuntimeTables:
        inputs = CallInputs.prepare([rule], q, q, ids)
        return runtime_tables([rule], compiled.head_layout, TileGrid(n, *tile), walk, inputs, StaticMaps(), q.device)

    routes: list[str] = []
    for name in ("compacted", "compacted_documents"):
        build = getattr(runtime, name)
        monkeypatch.setattr(runtime, name, lambda *args, name=name, build=build: routes.append(name) or build(*args))
    for walk in ("rows", "columns"):
        fast = tables(walk)
        with monkeypatch.context() as patch:
            patch.setattr(runtime, "_static_beside_documents", lambda rule: None)
            general = tables(walk)
        assert routes == ["compacted_documents", "compacted"], routes  # each path as its name says
        routes.clear()
        assert fast.table_stride == general.table_stride
        assert torch.equal(fast.table_of_head, general.table_of_head)
        for name in ("order", "full_ptr", "full_idx", "partial_ptr", "partial_idx"):
            assert torch.equal(getattr(fast.walk, name), getattr(general.walk, name)), (walk, name)


@pytest.mark.parametrize(
    "pattern",
    [
        [{"intersect": [{"document": {}}, WINDOW]}, {"sink": {"count": 2}}],
        [{"document": {}}, WINDOW],
        {"difference": [{"document": {}}, WINDOW]},
        {"difference": [WINDOW, {"document": {}}]},
        {"sink": {"count": 2, "per": "document"}},
        {"intersect": [{"document": {}}, {"sink": {"count": 2, "per": "document"}}]},
        {"intersect": [{"document": {}}, [{"document": {}}, WINDOW]]},
        {"intersect": [{"difference": [{"document": {}}, WINDOW]}, WINDOW]},
    ],
)
def test_other_document_patterns_keep_the_general_path(pattern: Any) -> None:
    """Unions, differences and per-document sets are not "same document ∩ static rules"."""
    from maskc.backends.triton import runtime

    spec = maskc.Spec.model_validate({"name": "docs", "causal": True, "pattern": pattern})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        rule = maskc.compile(spec, seq_len=96, block_size=16).layouts[0].rule
    assert runtime._static_beside_documents(rule) is None


def _tile_truth(mask: np.ndarray, grid: TileGrid) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = grid.row_tiles * grid.block_m, grid.col_tiles * grid.block_n
    padded = np.zeros((rows, cols), dtype=bool)
    valid = np.zeros((rows, cols), dtype=bool)
    padded[: grid.n, : grid.n] = mask
    valid[: grid.n, : grid.n] = True
    view = padded.reshape(grid.row_tiles, grid.block_m, grid.col_tiles, grid.block_n)
    inside = valid.reshape(grid.row_tiles, grid.block_m, grid.col_tiles, grid.block_n)
    return view.any(axis=(1, 3)), (view == inside).all(axis=(1, 3))


def _check_tables(pattern: maskc.CompiledPattern, masks: np.ndarray, grid: TileGrid, tables, walk: str) -> None:
    """masks: (B, H, n, n) exact masks; tables for `walk` must cover them exactly."""
    batch, heads = masks.shape[:2]
    walk_tables = tables.walk
    lines, width = (grid.row_tiles, grid.col_tiles) if walk == "rows" else (grid.col_tiles, grid.row_tiles)
    groups = len(walk_tables.full_ptr) // (lines + 1)
    full = _maps_from_tables(walk_tables.full_ptr.numpy(), walk_tables.full_idx.numpy(), groups, lines, width)
    partial = _maps_from_tables(walk_tables.partial_ptr.numpy(), walk_tables.partial_idx.numpy(), groups, lines, width)
    assert not (full & partial).any()
    assert sorted(walk_tables.order.tolist()) == list(range(lines))
    for b in range(batch):
        for h in range(heads):
            table = int(tables.table_of_head[h]) + b * tables.table_stride
            any_true, full_true = _tile_truth(masks[b, h], grid)
            if walk == "columns":
                any_true, full_true = any_true.T, full_true.T
            stored = full[table] | partial[table]
            assert not (any_true & ~stored).any(), "a non-empty tile is missing"
            assert not (full[table] & ~full_true).any(), "a tile called full is not"


@PROPERTY
@given(document_spec_dicts(max_n=120), tile_shapes(), st.sampled_from(["rows", "columns"]))
def test_document_tables_cover_the_exact_mask(
    case: tuple[dict, int, list[int]], tile: tuple[int, int], walk: str
) -> None:
    spec_dict, n, lengths = case
    spec = maskc.Spec.model_validate(spec_dict)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(spec, block_size=tile)
        other = list(reversed(lengths))
        ids = [maskc.ids_from_lengths(lengths), maskc.ids_from_lengths(other)]
        masks = np.stack([maskc.compile(spec, block_size=tile, documents=i).to_dense()[None] for i in ids])
    q = torch.zeros(2, 1, n, 4)
    inputs = CallInputs.prepare([pattern.layouts[0].rule], q, q, torch.as_tensor(np.stack(ids)))
    grid = TileGrid(n, *tile)
    tables = runtime_tables([pattern.layouts[0].rule], pattern.head_layout, grid, walk, inputs, StaticMaps(), q.device)
    _check_tables(pattern, masks, grid, tables, walk)


def _check_resolved_by_q_and_k(spec: maskc.Spec, n: int, tile: tuple[int, int], seed: int) -> None:
    """Four query heads on two key heads, random q and k: the device tables against the host resolution."""
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 4, n, 8, generator=gen), torch.randn(2, 2, n, 8, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(spec, seq_len=n, heads=4, block_size=tile)
        resolved = resolve_dynamic(pattern, q, k)
        masks = np.stack([np.stack([p.layout_of_head(h).to_dense() for h in range(4)]) for p in resolved])
    rules = [layout.rule for layout in pattern.layouts]
    inputs = CallInputs.prepare(rules, q, k, None)
    grid = TileGrid(n, *tile)
    for walk in ("rows", "columns"):
        tables = runtime_tables(rules, pattern.head_layout, grid, walk, inputs, StaticMaps(), q.device)
        _check_tables(pattern, masks, grid, tables, walk)


@settings(max_examples=20, deadline=None)
@given(
    st.integers(1, 90),
    st.sampled_from([4, 16, 32]),
    tile_shapes(),
    st.integers(1, 4),
    st.booleans(),
    st.sampled_from(["head", "group"]),
    st.integers(0, 2**16),
)
def test_topk_tables_cover_the_exact_mask(
    n: int, block: int, tile: tuple[int, int], blocks: int, causal: bool, share: str, seed: int
) -> None:
    spec = maskc.Spec.model_validate(
        {
            "name": "nsa",
            "causal": causal,
            "block_size": block,
            "pattern": [{"window": {"before": 5, "after": 0}}, {"topk": {"blocks": blocks, "share": share}}],
        }
    )
    _check_resolved_by_q_and_k(spec, n, tile, seed)


@settings(max_examples=8, deadline=None)
@given(st.integers(2, 80), tile_shapes(), st.sampled_from(["kmeans", "lsh"]), st.booleans(), st.integers(0, 2**16))
def test_cluster_tables_cover_the_exact_mask(
    n: int, tile: tuple[int, int], method: str, causal: bool, seed: int
) -> None:
    spec = maskc.Spec.model_validate(
        {
            "name": "routing",
            "causal": causal,
            "pattern": [{"cluster": {"clusters": 4, "method": method}}, {"window": {"before": 3, "after": 0}}],
        }
    )
    _check_resolved_by_q_and_k(spec, n, tile, seed)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=6), tile_shapes())
def test_document_causal_tables_are_exact(lengths: list[int], tile: tuple[int, int]) -> None:
    """For documents alone (and causal), the device tables store exactly the non-empty tiles and call
    exactly the full ones full: no tile outside a document's range is walked."""
    n = sum(lengths)
    spec = maskc.Spec.model_validate({"name": "docs", "causal": True, "pattern": {"document": {}}})
    ids = maskc.ids_from_lengths(lengths)
    pattern = maskc.compile(spec, seq_len=n, block_size=tile)
    exact = maskc.compile(spec, seq_len=n, block_size=tile, documents=ids).layouts[0]
    q = torch.zeros(1, 1, n, 4)
    rules = [pattern.layouts[0].rule]
    inputs = CallInputs.prepare(rules, q, q, torch.as_tensor(ids)[None])
    grid = TileGrid(n, *tile)
    walk = runtime_tables(rules, pattern.head_layout, grid, "rows", inputs, StaticMaps(), q.device).walk
    full = _maps_from_tables(walk.full_ptr.numpy(), walk.full_idx.numpy(), 1, grid.row_tiles, grid.col_tiles)[0]
    partial = _maps_from_tables(walk.partial_ptr.numpy(), walk.partial_idx.numpy(), 1, grid.row_tiles, grid.col_tiles)[
        0
    ]
    rows = exact.tile_rows()
    stored = np.zeros_like(full)
    stored[rows, exact.col_idx] = True
    exact_full = np.zeros_like(full)
    exact_full[rows[exact.full], exact.col_idx[exact.full]] = True
    assert np.array_equal(full | partial, stored)
    assert np.array_equal(full, exact_full)


@settings(max_examples=10, deadline=None)
@given(st.integers(8, 70), tile_shapes(), st.integers(1, 3), st.integers(0, 2**16))
def test_per_head_layouts_with_topk_tables_cover_the_exact_mask(
    n: int, tile: tuple[int, int], blocks: int, seed: int
) -> None:
    """Heads with different layouts, one of them decided by q and k: each head's table from its own
    layout (the tables are per (batch, head), picked from the layouts by the head's layout index)."""
    spec = maskc.Spec.model_validate(
        {
            "name": "mixed heads",
            "causal": True,
            "block_size": 8,
            "heads": 4,
            "pattern": [{"window": {"before": 3, "after": 0}}, {"topk": {"blocks": blocks}}],
            "head_patterns": [
                {"heads": [1], "pattern": {"window": {"before": 6, "after": 0}}},
                {"heads": [3], "pattern": [{"sink": {"count": 2}}, {"topk": {"blocks": 1}}]},
            ],
        }
    )
    _check_resolved_by_q_and_k(spec, n, tile, seed)


def test_static_tensors_made_inside_a_capture_are_not_kept(monkeypatch) -> None:
    """StaticMaps keeps a grid's index tensors for later calls, but not one made inside a CUDA graph
    capture (recorded, not computed, until a replay): the next call outside makes and keeps its own."""
    from maskc import tracing

    maps = StaticMaps()
    made: list[torch.Tensor] = []

    def make() -> torch.Tensor:
        made.append(torch.arange(4))
        return made[-1]

    monkeypatch.setattr(tracing, "capturing", lambda device: True)
    inside = maps.tensor(("ends", 4), make)
    monkeypatch.setattr(tracing, "capturing", lambda device: False)
    outside = maps.tensor(("ends", 4), make)
    assert inside is made[0] and outside is made[1]
    assert maps.tensor(("ends", 4), make) is outside and len(made) == 2


def test_tiles_between_two_single_clusters_are_empty() -> None:
    """Rows all of one cluster against columns all of another hold no pair: such a tile is not stored
    (tight, not only sound: coverage checks alone would pass a stored one)."""
    n = 32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        spec = maskc.Spec.model_validate({"pattern": {"cluster": {"clusters": 2}}})
        rule = maskc.compile(spec, seq_len=n, block_size=(16, 16)).layouts[0].rule
    (leaf,) = rule.leaves()
    labels = torch.tensor([0] * 16 + [1] * 16, dtype=torch.int32).view(1, 1, n)
    values = {f"q_labels:{leaf.origin}": labels, f"k_labels:{leaf.origin}": labels}
    kinds = tile_kinds(rule, TileGrid(n, 16, 16), CallInputs(1, 1, n, values), StaticMaps(), labels.device)
    assert kinds.tolist() == [[[[2, 0], [0, 2]]]]
