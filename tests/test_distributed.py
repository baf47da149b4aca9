"""Context parallelism on 2 and 4 gloo processes against the single-process result, and the planner."""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from cp_worker import CASES, case_keys, compile_spec, main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import spec_dicts, tile_shapes

import maskc
from maskc import distributed as md
from maskc.errors import BackendError, DynamicPatternError, MaskcWarning

#: Seconds the worker processes of one world size may take before the test fails (a hang is a failure).
WORKER_TIMEOUT = 240


def _run_world(world: int, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp(f"cp{world}")
    init_file, result_file = folder / "init", folder / "result.json"
    context = mp.start_processes(
        main, args=(world, str(init_file), str(result_file)), nprocs=world, join=False, start_method="fork"
    )
    deadline = time.monotonic() + WORKER_TIMEOUT
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{world} context-parallel workers did not finish within {WORKER_TIMEOUT} s")
    return json.loads(result_file.read_text())


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _run_world(2, tmp_path_factory)


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _run_world(4, tmp_path_factory)


@pytest.fixture(scope="module")
def eight_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _run_world(8, tmp_path_factory)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MASKC_SLOW_TESTS"), reason="8 processes: opt in with MASKC_SLOW_TESTS=1")
@pytest.mark.parametrize("case", case_keys())
def test_eight_ranks_match_one_process(eight_ranks: dict[str, str], case: str) -> None:
    assert eight_ranks[case] == "", eight_ranks[case]


@pytest.mark.parametrize("case", case_keys())
def test_two_ranks_match_one_process(two_ranks: dict[str, str], case: str) -> None:
    assert two_ranks[case] == "", two_ranks[case]


@pytest.mark.parametrize("case", case_keys())
def test_four_ranks_match_one_process(four_ranks: dict[str, str], case: str) -> None:
    assert four_ranks[case] == "", four_ranks[case]


@pytest.mark.parametrize("sharding", ["contiguous", "zigzag"])
@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_shard_and_unshard_are_inverse(ranks: int, sharding: str) -> None:
    x = torch.arange(2 * 3 * 24 * 2).reshape(2, 3, 24, 2)
    shards = [md.shard(x, r, ranks, sharding) for r in range(ranks)]
    assert torch.equal(md.unshard(shards, sharding), x)
    held = torch.cat([md.positions(24, r, ranks, sharding) for r in range(ranks)])
    assert sorted(held.tolist()) == list(range(24))


def test_zigzag_holds_chunk_r_and_its_mirror() -> None:
    assert md.rank_ranges(16, 0, 4, "zigzag") == [(0, 2), (14, 16)]
    assert md.rank_ranges(16, 3, 4, "zigzag") == [(6, 10)]


def test_plan_reads_exactly_the_keys_of_stored_tiles() -> None:
    """Brute force over the tile map: a rank needs key tile c exactly when one of its query rows' tiles stores c."""
    for name, spec, n, heads, _ in CASES:
        pattern = compile_spec(spec, n, heads)
        for sharding in ("contiguous", "zigzag"):
            for world in (2, 3, 4):
                if n % (2 * world) == 0:
                    check_plan_against_tiles(pattern, world, sharding, name)


def check_plan_against_tiles(pattern: maskc.CompiledPattern, world: int, sharding: str, name: str = "") -> None:
    """Keys read, received and their senders, hosts of shipped rows and the total work, from the dense mask."""
    n, bm, bn = pattern.n, pattern.block_m, pattern.block_n
    dense = pattern.to_dense().reshape(-1, n, n) if pattern.per_head else pattern.to_dense()[None]
    plan = md.plan(pattern, world, sharding, "halo")
    owner = {j: r for r in range(world) for j in md.positions(n, r, world, sharding).tolist()}
    for rank in range(world):
        where = (name, sharding, world, rank)
        own = {j for j, r in owner.items() if r == rank}
        shipped = {i for s in plan.shipped(rank) for a, b in s.ranges for i in range(a, b)}
        needed, needed_kept = _keys_of_tiles(dense, own, bm, bn), _keys_of_tiles(dense, own - shipped, bm, bn)
        assert plan.rank_plans[rank].keys_read == len(needed), where
        assert plan.keys_received(rank) == len(needed_kept - own), where
        got = {j for t in plan.p2p if t.dst == rank for a, b in t.ranges for j in range(a, b)}
        got |= {j for t in plan.broadcasts if t.src != rank for a, b in t.ranges for j in range(a, b)}
        assert got == needed_kept - own, where
        hosts = {owner[j] for j in _keys_of_tiles(dense, shipped, bm, bn)} - {rank} if shipped else set()
        assert {s.dst for s in plan.shipped(rank)} == hosts, where
    heads = dense.shape[0] if pattern.per_head else pattern.heads
    area = sum(_tile_area(dense[h], bm, bn) for h in range(dense.shape[0])) * (1 if pattern.per_head else heads)
    assert sum(p.work for p in plan.rank_plans) == area, (name, sharding, world)


def _tile_area(mask: np.ndarray, bm: int, bn: int) -> int:
    """Elements of every tile holding an active pair (the last tiles clipped at n)."""
    n = mask.shape[0]
    return sum(
        min(bm, n - r) * min(bn, n - c)
        for r in range(0, n, bm)
        for c in range(0, n, bn)
        if mask[r : r + bm, c : c + bn].any()
    )


def _keys_of_tiles(dense, rows: set[int], bm: int, bn: int) -> set[int]:
    """Keys of every tile (any head) that holds an active pair in the tile rows of `rows`."""
    n = dense.shape[-1]
    tiles = [dense[:, r * bm : (r + 1) * bm] for r in sorted({r // bm for r in rows})]
    stored = [c for c in range(-(-n // bn)) if any(t[..., c * bn : (c + 1) * bn].any() for t in tiles)]
    return {j for c in stored for j in range(c * bn, min((c + 1) * bn, n))}


@pytest.mark.parametrize("world", [2, 4])
def test_global_row_is_shipped_not_fed(world: int) -> None:
    """Token 0's row reads every key: its tile of rows goes to the key owners instead of every key to it."""
    spec = next(spec for name, spec, *_ in CASES if name == "longformer_rows")
    plan = md.plan(compile_spec(spec, 512), world, "contiguous")
    assert [(s.src, s.dst, s.ranges) for s in plan.shipped(0)] == [(0, r, ((0, 16),)) for r in range(1, world)]
    assert plan.keys_received(0) < 64  # a halo and no more
    no_shipping = 512 - 512 // world
    assert plan.bytes_received(0, md.CallSize(1, 2, 2, 8, 8, 2, 4))[0] < no_shipping * 2 * 2 * 16 / 4


def test_rows_of_a_global_group_are_shipped_together() -> None:
    """Two tile rows of global tokens each read every key: neither alone saves a key, both together save all."""
    spec = {"name": "lf2", "block_size": 16, "pattern": [{"window": {"size": 8}}, {"global": {"first": 32}}]}
    plan = md.plan(compile_spec(spec, 512), 4, "contiguous")
    assert [(s.dst, s.ranges) for s in plan.shipped(0)] == [(r, ((0, 32),)) for r in (1, 2, 3)]
    assert plan.keys_received(0) == 16  # the first key tile of rank 1 (its window) and nothing more


def test_window_plan_moves_one_halo() -> None:
    pattern = maskc.compile("specs/mistral_swa.yaml", seq_len=262144)
    plan = md.plan(pattern, 2, "contiguous")
    assert [plan.keys_received(r) for r in range(2)] == [0, 4096]
    assert [(t.src, t.dst, t.ranges) for t in plan.p2p] == [(0, 1, ((126976, 131072),))]
    assert plan.imbalance < 0.01


def test_dense_causal_zigzag_balances_work() -> None:
    pattern = compile_spec({"name": "causal", "causal": True, "pattern": {"dense": {}}}, 8192, tile=64)
    contiguous, zigzag = md.plan(pattern, 4, "contiguous"), md.plan(pattern, 4, "zigzag")
    assert contiguous.imbalance > 0.5
    assert zigzag.imbalance < 0.01
    # every ring step too: rank r's zigzag chunks against rank r − s's hold two chunks of work each
    assert zigzag.mode == "ring" and zigzag.ring_imbalance < 0.01
    assert contiguous.ring_imbalance > 0.5


N_RING = 4608  # splits over 3, 4 and 8 ranks


def test_three_ranks_keep_halos_for_dense_causal() -> None:
    """Over three ranks a ring holds two shards at once, as many as the last rank's halos: no gain."""
    dense = compile_spec({"name": "causal", "causal": True, "pattern": {"dense": {}}}, N_RING, tile=64)
    assert md.plan(dense, 3, "contiguous").mode == "halo"
    assert md.plan(dense, 3, "contiguous", "ring").mode == "ring"


@pytest.mark.parametrize("ranks", [4, 8])
def test_ring_is_chosen_where_ranks_read_nearly_every_key(ranks: int) -> None:
    dense = compile_spec({"name": "causal", "causal": True, "pattern": {"dense": {}}}, N_RING, tile=64)
    window = compile_spec({"name": "w", "causal": True, "pattern": {"window": {"before": 255}}}, N_RING, tile=64)
    ring = md.plan(dense, ranks, "contiguous")
    halo = md.plan(window, ranks, "contiguous")
    assert (ring.mode, halo.mode) == ("ring", "halo"), (ring.reason, halo.reason)
    shard = N_RING // ranks
    assert ring.peak_keys == min(2, ranks - 1) * shard and ring.p2p == [] and ring.broadcasts == []
    size = md.CallSize(1, 2, 2, 8, 8, itemsize=2, lse_itemsize=4)
    assert ring.bytes_received(1, size) == ((N_RING - shard) * 64, (N_RING - shard) * (64 + 128))


@pytest.mark.parametrize("sharding", ["contiguous", "zigzag"])
def test_ring_blocks_cover_exactly_the_stored_tiles(sharding: str) -> None:
    """A ring plan's blocks, step by step, hold every stored tile's keys of the rank's rows once."""
    for name, spec, n, heads, _ in CASES:
        pattern = compile_spec(spec, n, heads)
        halo, ring = md.plan(pattern, 4, sharding, "halo"), md.plan(pattern, 4, sharding, "ring")
        assert [p.work for p in ring.rank_plans] == [sum(step[r] for step in ring.step_work) for r in range(4)]
        assert sum(p.work for p in ring.rank_plans) == sum(p.work for p in halo.rank_plans), name
        for rank in range(4):
            read = {j for b in ring.rank_plans[rank].blocks for j in range(b.k_start, b.k_stop)}
            assert len(read) == ring.rank_plans[rank].keys_read == halo.rank_plans[rank].keys_read, name
            for block in ring.rank_plans[rank].blocks:
                held = md.rank_ranges(n, block.source, 4, sharding)
                assert any(a <= block.k_start and block.k_stop <= b for a, b in held), (name, block)


def test_a_memory_budget_keeps_halos_that_fit() -> None:
    """Within the budget halos are kept (the ring recomputes forward in backward); past it, the ring."""
    dense = compile_spec({"name": "causal", "causal": True, "pattern": {"dense": {}}}, N_RING, tile=64)
    halo_held = md.plan(dense, 4, "zigzag", "halo").peak_keys
    assert md.plan(dense, 4, "zigzag", max_held_keys=halo_held).mode == "halo"
    assert md.plan(dense, 4, "zigzag", max_held_keys=halo_held - 1).mode == "ring"
    with pytest.raises(BackendError, match="max_held_keys must be at least 0"):
        md.plan(dense, 4, "zigzag", max_held_keys=-1)


def test_plan_mode_is_checked() -> None:
    pattern = compile_spec({"name": "w", "pattern": {"window": {"size": 8}}}, 64, tile=16)
    with pytest.raises(BackendError, match="mode must be one of auto, halo, ring"):
        md.plan(pattern, 2, "contiguous", "all-gather")


def test_global_keys_go_by_broadcast_past_two_ranks() -> None:
    spec = {"name": "lf", "pattern": [{"window": {"before": 64, "after": 64}}, {"global": {"tokens": [0]}}]}
    plan = md.plan(compile_spec(spec, 4096, tile=64), 8, "contiguous")
    assert [(t.src, t.ranges) for t in plan.broadcasts] == [(0, ((0, 64),))]


def test_run_time_patterns_are_refused() -> None:
    spec = {"name": "c", "pattern": {"cluster": {"clusters": 4}}}
    with pytest.raises(DynamicPatternError, match="static patterns only"):
        md.plan(compile_spec(spec, 256, tile=64), 2)


def test_uneven_split_is_refused() -> None:
    pattern = compile_spec({"name": "w", "pattern": {"window": {"size": 8}}}, 100, tile=16)
    with pytest.raises(BackendError, match="does not split into 8 equal chunks"):
        md.plan(pattern, 4, "zigzag")
    with pytest.raises(BackendError, match="sharding must be one of"):
        md.plan(pattern, 2, "striped")


def test_merge_by_lse_equals_softmax_over_the_union() -> None:
    from maskc.distributed.parallel import merge

    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 10, generator=gen, dtype=torch.float64)
    values = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    scores[2] = float("-inf")  # a row with no key at all

    def part(cols: slice) -> tuple[torch.Tensor, torch.Tensor]:
        s = scores[:, cols]
        lse = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - lse[:, None]).nan_to_num(0.0)
        return p @ values[cols], lse

    out, lse = merge(*part(slice(0, 4)), *part(slice(4, 10)))
    want_out, want_lse = part(slice(0, 10))
    assert torch.allclose(out, want_out) and torch.equal(lse.isinf(), want_lse.isinf())
    assert torch.allclose(lse[:2], want_lse[:2]) and torch.equal(out[2], torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("sharding", ["contiguous", "zigzag"])
@pytest.mark.parametrize("ranks", [2, 4])
def test_simulated_ranks_match_one_call(ranks: int, sharding: str) -> None:
    """Every rank's calls and merges in one process (no communication) give the one-call result and gradients."""
    for _, spec, n, heads, kv_heads in CASES:
        pattern = compile_spec(spec, n, heads)
        gen = torch.Generator().manual_seed(ranks)
        q = torch.randn(1, heads, n, 8, generator=gen, dtype=torch.float64, requires_grad=True)
        k, v = (torch.randn(1, kv_heads, n, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in "kv")
        w = torch.randn(1, heads, n, 8, generator=gen, dtype=torch.float64)
        results = []
        for out, lse in (
            maskc.attention(q, k, v, pattern, return_lse=True),
            md.simulate(q, k, v, pattern, ranks, sharding),
        ):
            grads = torch.autograd.grad((out * w).sum() + lse.masked_fill(lse.isinf(), 0).sum(), (q, k, v))
            results.append([out, lse, *grads])
        for want, got in zip(*results):
            assert torch.allclose(got, want, atol=1e-10), spec["name"]


def test_call_needs_an_initialized_group_and_shards_of_the_pattern(tmp_path) -> None:
    pattern = compile_spec({"name": "w", "pattern": {"window": {"size": 8}}}, 64, tile=16)
    x = torch.zeros(1, 1, 32, 8)
    assert not torch.distributed.is_initialized()
    with pytest.raises(BackendError, match=r"needs torch\.distributed initialized"):
        md.attention(x, x, x, pattern)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        with pytest.raises(BackendError, match="holds 32 positions per rank; pattern 'w' is compiled for seq_len 64"):
            md.attention(x, x, x, pattern)
        full = torch.randn(1, 1, 64, 8)
        assert torch.allclose(md.attention(full, full, full, pattern), maskc.attention(full, full, full, pattern))
    finally:
        torch.distributed.destroy_process_group()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_dicts(max_n=120), tile_shapes(), st.integers(1, 4), st.sampled_from(["contiguous", "zigzag"]), st.data())
def test_plans_of_random_specs(case, tile, world: int, sharding: str, data: st.DataObject) -> None:
    """Any static spec: the plan against the tile map, and every rank's calls and merges against one call."""
    spec, n = case
    n = -(-n // (2 * world)) * 2 * world  # the shards must be equal; the spec stays valid at a larger n
    heads = spec.get("heads", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec.model_validate(spec), seq_len=n, block_size=tile, heads=heads)
    check_plan_against_tiles(pattern, world, sharding, spec["name"])
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    q = torch.randn(1, heads, n, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(1, 1, n, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in "kv")
    w = torch.randn(1, heads, n, 4, generator=gen, dtype=torch.float64)
    results = []
    for out, lse in (
        maskc.attention(q, k, v, pattern, return_lse=True),
        md.simulate(q, k, v, pattern, world, sharding),
    ):
        loss = (out * w).sum() + lse.masked_fill(lse.isinf(), 0).sum() + 0 * (q.sum() + k.sum() + v.sum())
        grads = torch.autograd.grad(loss, (q, k, v))  # the zero term: a pattern may have no pair at all
        results.append([out, lse, *grads])
    for want, got in zip(*results):
        assert torch.allclose(got, want, atol=1e-10)
