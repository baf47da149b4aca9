"""Context parallelism on the GPUs of one host: per-GPU throughput against one GPU, bytes against the plan.

Run: NCCL_NVLS_ENABLE=0 torchrun --standalone --nproc_per_node 2 bench/bench_cp.py --out cp.json
On 4 and 8 GPUs at n = 1M / 2M (issue 17): bash bench/run_cp_scaling.sh.

For each case (causal window 4096 over contiguous shards; dense causal over zigzag shards, as the
planner moves its keys (a ring past two ranks) and, for comparison, by halos or over contiguous
shards), bf16, B = 1, H = 16, D = 128, n = 262144 by default:

- forward+backward of `maskc.distributed.attention` on all ranks (median over --reps; a step
  lasts as long as its slowest rank), and the same of `maskc.attention` at n / P on rank 0 alone,
  in the same run, while the other ranks wait;
- per-GPU throughput = active pairs / P / step time, against active pairs (n / P) / time on one
  GPU; the targets are 0.90 (window) and 0.80 (dense causal);
- bytes each rank received (keys and values forward, their gradients backward), counted by
  maskc.distributed.comm, against the planner's prediction and against an all-gather;
- the planner's work imbalance and each rank's measured step time;
- the output shard's relative difference from one GPU computing the rank's query rows against
  all n keys (a rectangular call; a correctness check whose cost is the rank's share).

A case that fails (a size over maskc.limits, memory) is recorded with its error and the run goes on.

Prints one table and writes every figure as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from report import profile_step

import maskc
from maskc import distributed as md
from maskc.distributed import comm
from maskc.errors import MaskcWarning


def spec_of(name: str, window: int) -> dict[str, Any]:
    """The benchmark's specs: a causal window of `window` keys (the query's own included), dense causal."""
    if name == "window":
        return {"name": f"causal-window-{window}", "causal": True, "pattern": {"window": {"before": window - 1}}}
    return {"name": "dense-causal", "causal": True, "pattern": {"dense": {}}}


#: case name → (spec, sharding, mode, throughput target)
CASES: dict[str, tuple[str, str, str, float | None]] = {
    "window": ("window", "contiguous", "auto", 0.90),
    "dense_causal": ("dense_causal", "zigzag", "auto", 0.80),
    "dense_causal_halo": ("dense_causal", "zigzag", "halo", None),
    "dense_causal_contiguous": ("dense_causal", "contiguous", "auto", None),
}
DEFAULT_CASES = "window,dense_causal,dense_causal_contiguous"


#: Where the benchmark runs: CUDA with NCCL, or (--cpu, a smoke test at small n) the CPU with gloo.
DEVICE = {"type": "cuda", "dtype": torch.bfloat16}


def synchronize() -> None:
    if DEVICE["type"] == "cuda":
        torch.cuda.synchronize()


def compile_spec(spec: dict[str, Any], n: int, heads: int) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(spec), seq_len=n, heads=heads)


def active_pairs(pattern: maskc.CompiledPattern) -> int:
    """Exact active (i, j) pairs summed over heads."""
    return sum(
        int((pattern.head_layout == k).sum()) * layout.element_count() for k, layout in enumerate(pattern.layouts)
    )


def median_ms(step: Callable[[], None], warmup: int, reps: int, synchronize_ranks: bool) -> list[float]:
    """Milliseconds of each of `reps` steps after `warmup` ones (ranks start each step together)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        if synchronize_ranks:
            dist.barrier()
        synchronize()
        start = time.perf_counter()
        step()
        synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def inputs(n_local: int, heads: int, dim: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator(device=DEVICE["type"]).manual_seed(seed)
    shape = (1, heads, n_local, dim)
    return [
        torch.randn(*shape, device=DEVICE["type"], dtype=DEVICE["dtype"], generator=gen).requires_grad_()
        for _ in range(3)
    ]


def fwd_bwd(call: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grad: torch.Tensor):
    def step() -> None:
        q.grad = k.grad = v.grad = None
        call(q, k, v).backward(grad)

    return step


def one_gpu(spec: dict[str, Any], n: int, heads: int, dim: int, args: argparse.Namespace) -> tuple[float, int]:
    """Median forward+backward ms of `maskc.attention` at n on this device alone, and its active pairs."""
    pattern = compile_spec(spec, n, heads)
    q, k, v = inputs(n, heads, dim, seed=1)
    grad = torch.randn_like(q)
    step = fwd_bwd(lambda a, b, c: maskc.attention(a, b, c, pattern), q, k, v, grad)
    return statistics.median(median_ms(step, args.warmup, args.reps, False)), active_pairs(pattern)


def simulate_case(case: str, ranks: int, args: argparse.Namespace) -> dict[str, Any]:
    """One device, no torch.distributed: each rank's local calls and merges (`md.simulate(only_rank=r)`)
    timed alone against n / P on the same device; communication is left out."""
    spec_name, sharding, mode, target = CASES[case]
    spec = spec_of(spec_name, args.window)
    n, heads, dim = args.seq_len, args.heads, args.head_dim
    pattern = compile_spec(spec, n, heads)
    single_ms, single_pairs = one_gpu(spec, n // ranks, heads, dim, args)
    q, k, v = inputs(n, heads, dim, seed=2)
    grad = torch.randn(1, heads, n // ranks, dim, device=q.device, dtype=q.dtype)
    rank_ms = []
    for rank in range(ranks):
        call = lambda a, b, c, r=rank: md.simulate(a, b, c, pattern, ranks, sharding, only_rank=r, mode=mode)[0]  # noqa: E731
        rank_ms.append(statistics.median(median_ms(fwd_bwd(call, q, k, v, grad), args.warmup, args.reps, False)))
    with torch.no_grad():
        whole = maskc.attention(q, k, v, pattern)
        rel_diff = (
            (md.simulate(q, k, v, pattern, ranks, sharding, mode=mode)[0].float() - whole.float()).norm()
            / whole.float().norm()
        ).item()
    per_gpu = active_pairs(pattern) / ranks / (max(rank_ms) * 1e-3)
    one = single_pairs / (single_ms * 1e-3)
    return {
        "case": case,
        "mode": f"simulated {ranks} ranks on one device, compute only",
        "n": n,
        "rank_ms": [round(t, 3) for t in rank_ms],
        "one_gpu_ms_at_n_over_p": round(single_ms, 3),
        "per_gpu_vs_one_gpu": round(per_gpu / one, 3),
        "target": target,
        "planned_imbalance": round(md.plan(pattern, ranks, sharding, mode).imbalance, 4),
        "measured_imbalance": round(max(rank_ms) / statistics.mean(rank_ms) - 1, 4),
        "out_rel_diff_vs_one_call": rel_diff,
    }


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """The case's figures; a failure (on any rank) is recorded as the case's error."""
    try:
        row = measure_case(case, args)
        failed = None
    except Exception as error:  # a size over a limit, memory: recorded, the run goes on
        row, failed = {"case": case}, f"rank {dist.get_rank()}: {type(error).__name__}: {error}"
    errors: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(errors, failed)
    if any(errors):
        return {"case": case, "n": args.seq_len, "ranks": dist.get_world_size(), "error": [e for e in errors if e]}
    return row


def measure_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    rank, world = dist.get_rank(), dist.get_world_size()
    spec_name, sharding, mode, target = CASES[case]
    spec = spec_of(spec_name, args.window)
    n, heads, dim = args.seq_len, args.heads, args.head_dim
    pattern = compile_spec(spec, n, heads)
    plan = md.plan(pattern, world, sharding, mode)
    size = md.CallSize(1, heads, heads, dim, dim, DEVICE["dtype"].itemsize, lse_itemsize=4)
    per_key = size.key_bytes

    # one GPU, n / P, alone
    single_ms = single_pairs = None
    if rank == 0:
        single_ms, single_pairs = one_gpu(spec, n // world, heads, dim, args)
    dist.barrier()

    # all ranks, n
    full = inputs(n, heads, dim, seed=2)
    q, k, v = (md.shard(x.detach(), rank, world, sharding).requires_grad_() for x in full)
    grad = torch.randn_like(q)
    call = lambda a, b, c: md.attention(a, b, c, pattern, sharding=sharding, mode=mode)  # noqa: E731
    comm.traffic.reset()
    fwd_bwd(call, q, k, v, grad)()
    synchronize()
    received = (comm.traffic.forward, comm.traffic.backward)
    times = median_ms(fwd_bwd(call, q, k, v, grad), args.warmup, args.reps, True)
    mine = statistics.median(times)
    if args.profile:
        profile_step(fwd_bwd(call, q, k, v, grad), f"{case}, rank {rank}")

    with torch.no_grad():  # correctness: this rank's rows against all n keys on this GPU alone
        keys, values = full[1].detach(), full[2].detach()
        rows = [
            maskc.attention(full[0].detach()[:, :, a:b], keys, values, pattern, q_offset=a, k_offset=0)
            for a, b in md.rank_ranges(n, rank, world, sharding)
        ]
        whole = torch.cat(rows, dim=2)
        part = md.attention(q.detach(), k.detach(), v.detach(), pattern, sharding=sharding, mode=mode)
        rel_diff = ((part.float() - whole.float()).norm() / whole.float().norm()).item()
    del full, whole, rows

    per_rank = [None] * world
    dist.all_gather_object(
        per_rank,
        {
            "rank": rank,
            "step_ms": round(mine, 3),
            "bytes_received_fwd": received[0],
            "bytes_received_bwd": received[1],
            "planned_bytes_fwd": plan.bytes_received(rank, size)[0],
            "planned_bytes_bwd": plan.bytes_received(rank, size)[1],
            "work": plan.rank_plans[rank].work,
            "out_rel_diff_vs_one_gpu": rel_diff,
        },
    )
    shared = [single_ms, single_pairs if rank == 0 else None]
    dist.broadcast_object_list(shared, src=0)
    single_ms, single_pairs = shared
    step_ms = max(r["step_ms"] for r in per_rank)
    pairs = active_pairs(pattern)
    per_gpu = pairs / world / (step_ms * 1e-3)
    one_rate = single_pairs / (single_ms * 1e-3)
    return {
        "case": case,
        "spec": spec["name"],
        "sharding": sharding,
        "mode": plan.mode,
        "mode_reason": plan.reason,
        "n": n,
        "ranks": world,
        "heads": heads,
        "head_dim": dim,
        "dtype": str(DEVICE["dtype"]).removeprefix("torch."),
        "step_ms": step_ms,
        "one_gpu_ms_at_n_over_p": round(single_ms, 3),
        "fwdbwd_tflops_per_gpu": round(3.5 * 4 * dim * per_gpu / 1e12, 1),
        "fwdbwd_tflops_one_gpu": round(3.5 * 4 * dim * one_rate / 1e12, 1),
        "per_gpu_vs_one_gpu": round(per_gpu / one_rate, 3),
        "target": target,
        "planned_imbalance": round(plan.imbalance, 4),
        "planned_ring_step_imbalance": round(plan.ring_imbalance, 4) if plan.mode == "ring" else None,
        "measured_imbalance": round(step_ms / statistics.mean(r["step_ms"] for r in per_rank) - 1, 4),
        "halo_bytes": args.window * per_key if spec_name == "window" else None,
        "all_gather_bytes": (n - n // world) * per_key,
        "peak_keys_held": plan.peak_keys,
        "bytes_match_plan": all(
            r["bytes_received_fwd"] == r["planned_bytes_fwd"] and r["bytes_received_bwd"] == r["planned_bytes_bwd"]
            for r in per_rank
        ),
        "per_rank": per_rank,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':<24} {'ms/step':>8} {'1-GPU ms':>9} {'TF/s/GPU':>9} {'1-GPU TF/s':>10} {'ratio':>6} {'target':>6} "
        f"{'imbal plan':>10} {'imbal meas':>10} {'max MiB recv fwd':>16} {'= plan':>6} {'rel diff':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['case']:<24} failed: {'; '.join(r['error'])[:200]}")
            continue
        recv = max(p["bytes_received_fwd"] for p in r["per_rank"]) / 2**20
        diff = max(p["out_rel_diff_vs_one_gpu"] for p in r["per_rank"])
        lines.append(
            f"{r['case']:<24} {r['step_ms']:>8.2f} {r['one_gpu_ms_at_n_over_p']:>9.2f} "
            f"{r['fwdbwd_tflops_per_gpu']:>9.1f} "
            f"{r['fwdbwd_tflops_one_gpu']:>10.1f} {r['per_gpu_vs_one_gpu']:>6.3f} {r['target'] or '-':>6} "
            f"{r['planned_imbalance']:>10.2%} {r['measured_imbalance']:>10.2%} {recv:>16.2f} "
            f"{'yes' if r['bytes_match_plan'] else 'NO':>6} {diff:>9.2e}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=262144, help="n")
    parser.add_argument("--window", type=int, default=4096, help="keys of the causal window, the query's own included")
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", required=True, help="JSON file to write (rank 0)")
    parser.add_argument(
        "--simulate-ranks", type=int, help="no torch.distributed: time each rank's compute alone on this one device"
    )
    parser.add_argument("--profile", action="store_true", help="print one profiled step per rank and case")
    parser.add_argument("--cpu", action="store_true", help="smoke test on the CPU with gloo (float32; small --seq-len)")
    args = parser.parse_args()
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # read when NCCL builds its communicators
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.simulate_ranks:
        rows = [simulate_case(case, args.simulate_ranks, args) for case in args.cases.split(",")]
        for row in rows:
            print(json.dumps(row), flush=True)
        with open(args.out, "w") as fh:
            json.dump({"meta": {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}, "results": rows}, fh)
        return
    if args.cpu:
        DEVICE.update(type="cpu", dtype=torch.float32)
        torch.set_num_threads(1)
        dist.init_process_group("gloo")
    else:
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    try:
        rows = []
        for case in args.cases.split(","):
            rows.append(run_case(case, args))
            if dist.get_rank() == 0:
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_rank"}), flush=True)
        if dist.get_rank() == 0:
            print(table(rows))
            meta = {
                "gpu": torch.cuda.get_device_name() if DEVICE["type"] == "cuda" else "none (CPU smoke test)",
                "gpus": dist.get_world_size(),
                "torch": torch.__version__,
                "triton": __import__("triton").__version__,
                "nccl": ".".join(map(str, torch.cuda.nccl.version())) if DEVICE["type"] == "cuda" else None,
                "host": platform.node(),
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE"),
            }
            with open(args.out, "w") as fh:
                json.dump({"meta": meta, "results": rows}, fh, indent=1)
            print(f"wrote {args.out}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
