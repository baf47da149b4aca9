"""Context parallelism on CUDA with the Triton backend: every rank's calls and merges against one call
on one GPU (bf16), and, where two GPUs are present, NCCL ranks against one GPU."""

from __future__ import annotations

import os
import tempfile
import warnings
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import maskc
from maskc import distributed as md
from maskc.distributed import comm
from maskc.errors import MaskcWarning

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

N = 8192
SPECS: dict[str, dict[str, Any]] = {
    "window": {"name": "w", "causal": True, "pattern": {"window": {"before": 1023}}},
    "longformer": {"name": "lf", "pattern": [{"window": {"before": 256, "after": 256}}, {"global": {"tokens": [0]}}]},
    "dense_causal": {"name": "dc", "causal": True, "pattern": {"dense": {}}},
    "per_head": {
        "name": "ph",
        "heads": 4,
        "causal": True,
        "pattern": {"window": {"before": 511}},
        "head_patterns": [{"heads": [1, 3], "pattern": [{"sink": {"count": 4}}, {"stride": {"every": 97}}]}],
    },
}
#: Relative error (norm) of bf16 results against the one-call bf16 result.
TOLERANCE = 2e-2


def compile_spec(name: str) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(SPECS[name]), seq_len=N, heads=4)


def inputs(device: str) -> list[torch.Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, 4, N, 64, device=device, dtype=torch.bfloat16, generator=gen)
    k, v = (torch.randn(1, 2, N, 64, device=device, dtype=torch.bfloat16, generator=gen) for _ in "kv")
    w = torch.randn(1, 4, N, 64, device=device, dtype=torch.bfloat16, generator=gen)
    return [q, k, v, w]


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def one_call(pattern: maskc.CompiledPattern, q, k, v, w) -> list[torch.Tensor]:
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = maskc.attention(*leaves, pattern)
    (out.float() * w).sum().backward()
    return [out.detach()] + [x.grad for x in leaves]


@pytest.mark.parametrize("sharding", ["contiguous", "zigzag"])
@pytest.mark.parametrize("ranks", [2, 4])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_simulated_ranks_match_one_call(name: str, ranks: int, sharding: str) -> None:
    pattern = compile_spec(name)
    q, k, v, w = inputs("cuda")
    want = one_call(pattern, q, k, v, w)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out, _ = md.simulate(*leaves, pattern, ranks, sharding)
    (out.float() * w).sum().backward()
    for what, got, expected in zip(("out", "dq", "dk", "dv"), [out.detach()] + [x.grad for x in leaves], want):
        assert relative(got, expected) < TOLERANCE, (what, relative(got, expected))


def _nccl_worker(rank: int, world: int, init_file: str, sharding: str, mode: str) -> None:
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
        device_id=torch.device("cuda", rank),  # eager: point-to-point batches need the communicator first
    )
    try:
        for name in sorted(SPECS):
            pattern = compile_spec(name)
            q, k, v, w = inputs("cuda")
            want = [md.shard(x, rank, world, sharding) for x in one_call(pattern, q, k, v, w)]
            part = [md.shard(x, rank, world, sharding).requires_grad_() for x in (q, k, v)]
            comm.traffic.reset()
            out = md.attention(*part, pattern, sharding=sharding, mode=mode)
            (out.float() * md.shard(w, rank, world, sharding)).sum().backward()
            torch.cuda.synchronize()
            plan = md.plan(pattern, world, sharding, mode)
            predicted = plan.bytes_received(rank, md.CallSize(1, 4, 2, 64, 64, itemsize=2, lse_itemsize=4))
            assert (comm.traffic.forward, comm.traffic.backward) == predicted, name
            # dK, dV of this rank's shard: its own queries' part plus what the other ranks sent back
            for what, got, expected in zip(("out", "dq", "dk", "dv"), [out.detach()] + [x.grad for x in part], want):
                assert relative(got, expected) < TOLERANCE, (name, what, relative(got, expected))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("mode", ["auto", "ring"])
@pytest.mark.parametrize("sharding", ["contiguous", "zigzag"])
def test_nccl_ranks_match_one_gpu(sharding: str, mode: str) -> None:
    """Two GPUs (four where the host has them); mode "ring" passes every shard round the ranks."""
    world = 4 if torch.cuda.device_count() >= 4 else 2
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_nccl_worker, args=(world, os.path.join(folder, "init"), sharding, mode), nprocs=world, join=True)
