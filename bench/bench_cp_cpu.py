"""Context parallelism on CPU processes with gloo: exactness against one process, bytes moved per rank
against the planner, work imbalance. For 4 and 8 (or any) process counts.

Run: python3 bench/bench_cp_cpu.py --ranks 4,8 --out cp_cpu.json

Every rank runs every case (float64, the CPU reference backend) forward+backward on its shards and
compares its output, lse, dQ, dK, dV shards with one process running the whole sequence; the
bytes it received (counted by maskc.distributed.comm) with the plan's prediction; and reports the
planner's work imbalance (and, for a ring, its per-step imbalance) with each rank's measured step
time. The times are those of processes sharing however many cores the machine has: they check that
nothing hangs or serialises badly, not speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import maskc
from maskc import distributed as md
from maskc.distributed import comm
from maskc.errors import MaskcWarning

#: case → (spec, sharding, mode). n, heads and D come from the command line.
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "window": ({"name": "window", "causal": True, "pattern": {"window": {"before": 255}}}, "contiguous", "auto"),
    "longformer": (
        {"name": "longformer", "pattern": [{"window": {"before": 64, "after": 64}}, {"global": {"tokens": [0, 1]}}]},
        "contiguous",
        "auto",
    ),
    "dense_causal_ring": ({"name": "dense-causal", "causal": True, "pattern": {"dense": {}}}, "zigzag", "auto"),
    "dense_causal_halo": ({"name": "dense-causal", "causal": True, "pattern": {"dense": {}}}, "zigzag", "halo"),
    "per_head": (
        {
            "name": "per-head",
            "causal": True,
            "pattern": {"window": {"before": 127}},
            "head_patterns": [{"heads": [1], "pattern": [{"sink": {"count": 4}}, {"stride": {"every": 61}}]}],
        },
        "zigzag",
        "auto",
    ),
}


def compile_spec(spec: dict[str, Any], n: int, heads: int, tile: int) -> maskc.CompiledPattern:
    spec = {**spec, "heads": heads} if "head_patterns" in spec else spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(spec), seq_len=n, heads=heads, block_size=tile)


def run_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """This rank's figures for one case."""
    rank, world = dist.get_rank(), dist.get_world_size()
    spec, sharding, mode = CASES[name]
    n, heads, dim = args.seq_len, args.heads, args.head_dim
    pattern = compile_spec(spec, n, heads, args.tile)
    gen = torch.Generator().manual_seed(7)
    q, k, v, w = (torch.randn(1, heads, n, dim, generator=gen, dtype=torch.float64) for _ in range(4))
    full = [x.clone().requires_grad_() for x in (q, k, v)]
    out, lse = maskc.attention(*full, pattern, return_lse=True)
    ((out * w).sum() + lse.masked_fill(lse.isinf(), 0).sum()).backward()
    want = [md.shard(x.detach(), rank, world, sharding) for x in (out, lse, *(x.grad for x in full))]

    part = [md.shard(x, rank, world, sharding).requires_grad_() for x in (q, k, v)]
    shard_w = md.shard(w, rank, world, sharding)
    times, received = [], (0, 0)
    for _ in range(args.reps):
        for x in part:
            x.grad = None
        comm.traffic.reset()
        dist.barrier()
        start = time.perf_counter()
        out_s, lse_s = md.attention(*part, pattern, sharding=sharding, return_lse=True, mode=mode)
        ((out_s * shard_w).sum() + lse_s.masked_fill(lse_s.isinf(), 0).sum()).backward()
        times.append(time.perf_counter() - start)
        received = (comm.traffic.forward, comm.traffic.backward)
    got = [out_s.detach(), lse_s.detach(), *(x.grad for x in part)]
    error = max(
        (g - e).abs().nan_to_num(0.0, posinf=float("inf")).max().item() if g.numel() else 0.0 for g, e in zip(got, want)
    )
    plan = md.plan(pattern, world, sharding, mode)
    size = md.CallSize(1, heads, heads, dim, dim, itemsize=8, lse_itemsize=8)
    return {
        "rank": rank,
        "mode": plan.mode,
        "max_abs_error": error,
        "bytes_fwd": received[0],
        "bytes_bwd": received[1],
        "planned_bytes_fwd": plan.bytes_received(rank, size)[0],
        "planned_bytes_bwd": plan.bytes_received(rank, size)[1],
        "work": plan.rank_plans[rank].work,
        "planned_imbalance": plan.imbalance,
        "ring_step_imbalance": plan.ring_imbalance if plan.mode == "ring" else None,
        "step_s": statistics.median(times),
        "all_gather_bytes": (n - n // world) * size.key_bytes,
    }


def worker(rank: int, world: int, init_file: str, result_file: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=300)
    )
    try:
        rows = []
        for name in args.cases.split(","):
            mine = run_case(name, args)
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, mine)
            rows.append({"case": name, "per_rank": gathered})
        if rank == 0:
            Path(result_file).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def summarise(world: int, rows: list[dict[str, Any]], tolerance: float) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        ranks = row["per_rank"]
        steps = [r["step_s"] for r in ranks]
        out.append(
            {
                "case": row["case"],
                "ranks": world,
                "mode": ranks[0]["mode"],
                "exact": all(r["max_abs_error"] <= tolerance for r in ranks),
                "max_abs_error": max(r["max_abs_error"] for r in ranks),
                "bytes_match_plan": all(
                    (r["bytes_fwd"], r["bytes_bwd"]) == (r["planned_bytes_fwd"], r["planned_bytes_bwd"]) for r in ranks
                ),
                "max_bytes_fwd": max(r["bytes_fwd"] for r in ranks),
                "max_bytes_bwd": max(r["bytes_bwd"] for r in ranks),
                "all_gather_bytes": ranks[0]["all_gather_bytes"],
                "planned_imbalance": ranks[0]["planned_imbalance"],
                "ring_step_imbalance": ranks[0]["ring_step_imbalance"],
                "measured_time_imbalance": max(steps) / statistics.mean(steps) - 1,
                "per_rank": ranks,
            }
        )
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'case':<20} {'P':>3} {'mode':>5} {'exact':>6} {'max err':>9} {'bytes=plan':>10} {'max KiB fwd':>11} "
        f"{'max KiB bwd':>11} {'all-gather KiB':>14} {'imbal plan':>10} {'ring steps':>10} {'time imbal':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ring = "-" if r["ring_step_imbalance"] is None else f"{r['ring_step_imbalance']:.2%}"
        lines.append(
            f"{r['case']:<20} {r['ranks']:>3} {r['mode']:>5} {'yes' if r['exact'] else 'NO':>6} "
            f"{r['max_abs_error']:>9.1e} {'yes' if r['bytes_match_plan'] else 'NO':>10} "
            f"{r['max_bytes_fwd'] / 1024:>11.1f} {r['max_bytes_bwd'] / 1024:>11.1f} "
            f"{r['all_gather_bytes'] / 1024:>14.1f} {r['planned_imbalance']:>10.2%} {ring:>10} "
            f"{r['measured_time_imbalance']:>10.2%}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="4,8", help="comma-separated process counts")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--tile", type=int, default=32, help="tile edge of the compiled patterns")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--reps", type=int, default=2, help="timed forward+backward calls per case")
    parser.add_argument("--tolerance", type=float, default=1e-9, help="largest absolute error counted as exact")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per process count before failing")
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args()
    results = []
    for world in (int(x) for x in args.ranks.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            result_file = Path(folder) / "result.json"
            context = mp.start_processes(
                worker,
                args=(world, str(Path(folder) / "init"), str(result_file), args),
                nprocs=world,
                join=False,
                start_method="fork",
            )
            deadline = time.monotonic() + args.timeout
            while not context.join(timeout=1):
                if time.monotonic() > deadline:
                    for process in context.processes:
                        process.kill()
                    print(f"{world} processes did not finish within {args.timeout:g} s", file=sys.stderr)
                    return 1
            results += summarise(world, json.loads(result_file.read_text()), args.tolerance)
        print(table([r for r in results if r["ranks"] == world]), flush=True)
    meta = {
        "torch": torch.__version__,
        "backend": "gloo, CPU reference (float64)",
        "seq_len": args.seq_len,
        "heads": args.heads,
        "head_dim": args.head_dim,
        "tile": args.tile,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        print(f"wrote {args.out}")
    ok = all(r["exact"] and r["bytes_match_plan"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
