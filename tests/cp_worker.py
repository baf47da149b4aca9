"""Worker processes of the context-parallel tests: every rank runs every case against the
single-process result and the planner's byte counts, and rank 0 writes what failed to a file."""

from __future__ import annotations

import json
import traceback
import warnings
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

import maskc
from maskc import distributed as md
from maskc.distributed import comm
from maskc.errors import MaskcWarning

#: (case name, spec, seq_len, heads, kv_heads). n is a multiple of 8 (zigzag over 4 ranks) but not of the
#: tile (32 rows × 16 columns), so shard boundaries cut tiles.
CASES: list[tuple[str, dict[str, Any], int, int, int]] = [
    ("window", {"name": "window", "pattern": {"window": {"before": 21, "after": 9}}}, 208, 2, 1),
    (
        "longformer",
        {"name": "longformer", "pattern": [{"window": {"before": 12, "after": 12}}, {"global": {"tokens": [0]}}]},
        208,
        2,
        2,
    ),
    (  # token 0's row reads every key: it is shipped to the key owners (tiles of 16 rows)
        "longformer_rows",
        {"name": "lf-rows", "block_size": 16, "pattern": [{"window": {"size": 24}}, {"global": {"tokens": [0]}}]},
        512,
        2,
        2,
    ),
    (  # only token 0's row reads keys: the other ranks' rows read none (zero outputs, zero gradients)
        "row_only",
        {"name": "row-only", "block_size": 16, "pattern": {"global": {"tokens": [0], "direction": "rows"}}},
        208,
        2,
        1,
    ),
    ("dense_causal", {"name": "dense-causal", "causal": True, "pattern": {"dense": {}}}, 208, 2, 2),
    (
        "per_head",
        {
            "name": "per-head",
            "heads": 2,
            "causal": True,
            "pattern": {"window": {"before": 9}},
            "head_patterns": [{"heads": [1], "pattern": [{"sink": {"count": 3}}, {"stride": {"every": 13}}]}],
        },
        208,
        2,
        1,
    ),
]
#: Cases run again with the keys forced round a ring (the dense causal case takes it unasked past
#: two ranks): case name → its spec's case.
RING_CASES = {"dense_causal_ring": "dense_causal", "window_ring": "window", "per_head_ring": "per_head"}
SHARDINGS = ("contiguous", "zigzag")
TILE = (32, 16)


def compile_spec(spec: dict[str, Any], n: int, heads: int = 1, tile: Any = None) -> maskc.CompiledPattern:
    """The spec compiled on `tile`, else its own block_size, else TILE."""
    tile = tile or spec.get("block_size", TILE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)  # rows with no key are part of some cases
        return maskc.compile(maskc.Spec.model_validate(spec), seq_len=n, block_size=tile, heads=heads)


def runs() -> list[tuple[str, str]]:
    """(case name, mode) of every run: each case as the planner chooses, then the ring cases."""
    return [(name, "auto") for name, *_ in CASES] + [(name, "ring") for name in RING_CASES]


def case_keys() -> list[str]:
    return [f"{name}-{sharding}" for name, _ in runs() for sharding in SHARDINGS]


def main(rank: int, world: int, init_file: str, result_file: str) -> None:
    """One rank: run every case, gather the failures, rank 0 writes {case: failure or ""}."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        failures = {}
        cases = {name: rest for name, *rest in CASES}
        for name, mode in runs():
            spec, n, heads, kv_heads = cases[RING_CASES.get(name, name)]
            for sharding in SHARDINGS:
                try:
                    check_case(spec, n, heads, kv_heads, sharding, with_lse=(name != "window"), mode=mode)
                    failures[f"{name}-{sharding}"] = ""
                except AssertionError:
                    failures[f"{name}-{sharding}"] = f"rank {rank}: {traceback.format_exc(limit=3)}"
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, failures)
        if rank == 0:
            merged = {key: "".join(g[key] for g in gathered) for key in failures}
            with open(result_file, "w") as fh:
                json.dump(merged, fh)
    finally:
        dist.destroy_process_group()


def check_case(
    spec: dict[str, Any], n: int, heads: int, kv_heads: int, sharding: str, with_lse: bool, mode: str = "auto"
) -> None:
    """This rank's output, lse and gradients equal the single-process ones; received bytes equal the plan's."""
    rank, world = dist.get_rank(), dist.get_world_size()
    pattern = compile_spec(spec, n, heads)
    gen = torch.Generator().manual_seed(n + heads)
    q = torch.randn(2, heads, n, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, kv_heads, n, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    w_out = torch.randn(2, heads, n, 8, generator=gen, dtype=torch.float64)
    w_lse = torch.randn(2, heads, n, generator=gen, dtype=torch.float64)

    full = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse = maskc.attention(*full, pattern, return_lse=True)
    loss = (out * w_out).sum() + ((lse.masked_fill(lse.isinf(), 0) * w_lse).sum() if with_lse else 0)
    loss.backward()

    part = [md.shard(x, rank, world, sharding).requires_grad_() for x in (q, k, v)]
    comm.traffic.reset()
    out_s, lse_s = md.attention(*part, pattern, sharding=sharding, return_lse=True, mode=mode)
    forward_bytes = comm.traffic.forward
    shard_w = md.shard(w_out, rank, world, sharding)
    loss_s = (out_s * shard_w).sum()
    if with_lse:
        loss_s = loss_s + (lse_s.masked_fill(lse_s.isinf(), 0) * md.shard(w_lse, rank, world, sharding)).sum()
    loss_s.backward()

    expected = [out, lse] + [x.grad for x in full]
    got = [out_s, lse_s] + [x.grad for x in part]
    for what, e, g in zip(("out", "lse", "dq", "dk", "dv"), expected, got):
        want = md.shard(e.detach(), rank, world, sharding)
        assert torch.allclose(g.detach(), want, atol=1e-9, rtol=1e-9, equal_nan=False) or torch.equal(g, want), (
            f"{what} differs by {(g.detach() - want).abs().nan_to_num(float('inf')).max().item():.3g}"
        )
    plan = md.plan(pattern, world, sharding, mode)
    assert mode == "auto" or plan.mode == mode or world == 1, (plan.mode, mode)
    predicted = plan.bytes_received(rank, md.CallSize(2, heads, kv_heads, 8, 8, itemsize=8, lse_itemsize=8))
    assert (forward_bytes, comm.traffic.backward) == predicted, ((forward_bytes, comm.traffic.backward), predicted)
