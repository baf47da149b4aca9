"""`maskc plan SPEC --seq-len N --ranks P`: the context-parallel plan, for any number of ranks.

Per rank: the positions it holds, the keys its queries read, the keys (and values) it receives
and the bytes that makes for a call of the given shape, the gradients that come back in the
backward pass, and its work (stored tile area over its query rows, summed over heads).
"""

from __future__ import annotations

import argparse
import json

from maskc.cli.options import add_spec_arguments, positive_int
from maskc.compiler import compile
from maskc.distributed.planner import MODES, CallSize, Plan, plan
from maskc.distributed.sharding import SHARDINGS

NAME = "plan"
HELP = "plan context parallelism: keys each rank receives and from whom, bytes moved, work per rank, imbalance"

#: Bytes per element of the dtypes a call may use.
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp64": 8}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument(
        "--ranks", type=positive_int, required=True, help="number of ranks P the sequence is split over"
    )
    parser.add_argument("--sharding", choices=SHARDINGS, default="contiguous", help="how positions go to ranks")
    parser.add_argument(
        "--mode", choices=MODES, default="auto", help="how keys move: halos, a ring, or the planner's choice (auto)"
    )
    parser.add_argument(
        "--max-held-gib",
        type=float,
        help="memory budget for received keys and values per rank (GiB, at the call's size): auto keeps "
        "halos that fit in it rather than a ring",
    )
    parser.add_argument("--heads", type=positive_int, help="query heads (default: the spec's, or 1)")
    parser.add_argument("--kv-heads", type=positive_int, help="key/value heads (default: the query heads)")
    parser.add_argument("--head-dim", type=positive_int, default=128, help="head dimension D for bytes (default 128)")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size B for bytes (default 1)")
    parser.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="bf16", help="element type for bytes")
    parser.add_argument("--transfers", action="store_true", help="list every transfer (src → dst: position ranges)")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")


def run(args: argparse.Namespace) -> int:
    pattern = compile(args.spec, seq_len=args.seq_len, block_size=args.block_size, heads=args.heads)
    kv_heads = args.kv_heads or pattern.heads
    itemsize = DTYPE_BYTES[args.dtype]
    size = CallSize(args.batch, pattern.heads, kv_heads, args.head_dim, args.head_dim, itemsize, max(4, itemsize))
    budget = None if args.max_held_gib is None else int(args.max_held_gib * 2**30) // size.key_bytes
    result = plan(pattern, args.ranks, args.sharding, args.mode, budget)
    if args.json:
        summary = result.as_dict(size)
        summary["call"] = {"batch": args.batch, "heads": pattern.heads, "kv_heads": kv_heads}
        summary["call"].update(head_dim=args.head_dim, dtype=args.dtype, bytes_per_key=size.key_bytes)
        print(json.dumps(summary))
        return 0
    shape = f"B={args.batch}, H={pattern.heads}, Hkv={kv_heads}, D={args.head_dim}, {args.dtype}"
    print("\n".join(summary_lines(result, size, shape)))
    if args.transfers:
        print("\n".join(transfer_lines(result)))
    return 0


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.2f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def summary_lines(result: Plan, size: CallSize, shape: str) -> list[str]:
    gather, per_key = result.n - result.shard_len, size.key_bytes
    lines = [
        f"pattern        {result.spec_name}  (n = {result.n:,}, {result.ranks} ranks, {result.sharding}, "
        f"tile {result.block_m}x{result.block_n}, {result.heads} heads)",
        f"mode           {result.mode}: {result.reason}",
        f"call           {shape}: {per_key:,} bytes per key and value row",
        f"all-gather     {gather:,} keys, {human_bytes(gather * per_key)} received per rank, for comparison",
        "",
        f"{'rank':>5} {'positions':>30} {'keys read':>11} {'received':>10} {'bytes fwd':>11} {'from':>5} "
        f"{'grad bytes':>11} {'work (tile area)':>17} {'calls':>6}",
    ]
    for p in result.rank_plans:
        forward, backward = result.bytes_received(p.rank, size)
        held = ", ".join(f"{a}…{b - 1}" for a, b in p.ranges)
        sources = len({t.src for t in result.receives(p.rank)} | {t.src for t in result.broadcasts if t.src != p.rank})
        sources = result.ranks - 1 if result.mode == "ring" else sources
        lines.append(
            f"{p.rank:>5} {held:>30} {p.keys_read:>11,} {result.keys_received(p.rank):>10,} "
            f"{human_bytes(forward):>11} {sources:>5} {human_bytes(backward):>11} {p.work:>17,} {len(p.blocks):>6}"
        )
    work = [p.work for p in result.rank_plans]
    received = [result.keys_received(r) for r in range(result.ranks)]
    shipped = sorted({s.src for s in result.shipments})
    shipped_rows = sum(result.shipped(src)[0].rows for src in shipped)
    lines += [
        "",
        f"imbalance      {result.imbalance:.2%} (largest work over mean work, minus one; "
        f"work {min(work):,} … {max(work):,})",
        *(
            [
                f"ring steps     {result.ranks} steps, imbalance {result.ring_imbalance:.2%} "
                "(each step's largest work, summed, over the mean work, minus one)"
            ]
            if result.mode == "ring"
            else []
        ),
        f"held at once   {result.peak_keys:,} received keys at most per rank",
        f"received       at most {max(received):,} keys per rank per call, "
        f"{max(received) / gather:.2%} of an all-gather"
        if gather
        else "received       nothing (one rank)",
        f"shipped rows   {shipped_rows:,} query rows of {_ranks(shipped)} computed where their keys are "
        f"({len(result.shipments)} messages each way)"
        if shipped
        else "shipped rows   none",
        f"messages       {len(result.p2p)} point-to-point, {len(result.broadcasts)} broadcast"
        + (f" (keys of {_ranks([t.src for t in result.broadcasts])})" if result.broadcasts else "")
        if result.mode == "halo"
        else f"messages       {result.ranks - 1} ring steps forward, each a shard from rank r − 1 (and "
        f"{result.ranks - 1} backward with the gradients)",
    ]
    return lines


def _ranks(ranks: list[int]) -> str:
    """ "rank 3", "ranks 0, 2, 5", or "ranks 0 … 63" for a long run."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    if len(ranks) > 8 and ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"ranks {ranks[0]} … {ranks[-1]}"
    return "ranks " + ", ".join(map(str, ranks))


def transfer_lines(result: Plan) -> list[str]:
    lines = ["", "transfers"]
    for t in result.p2p:
        lines.append(f"  {t.src:>4} → {t.dst:<4} {t.keys:>10,} keys  " + _ranges(t.ranges))
    for t in result.broadcasts:
        lines.append(f"  {t.src:>4} → all  {t.keys:>10,} keys  " + _ranges(t.ranges))
    for s in result.shipments:
        lines.append(f"  {s.src:>4} → {s.dst:<4} {s.rows:>10,} query rows  " + _ranges(s.ranges))
    return lines


def _ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    return ", ".join(f"[{a}, {b})" for a, b in ranges)
