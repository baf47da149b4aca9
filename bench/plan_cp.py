"""The context-parallel planner's predictions for issue 17's sizes, as a Markdown table (no GPU, no run).

Run: python3 bench/plan_cp.py [--ranks 4,8,64] [--seq-lens 1048576,2097152] [--out plan_cp.json]

For a causal window of 4096 keys (contiguous shards) and dense causal (zigzag and contiguous
shards), bf16, B = 1, H = 16, D = 128: the mode the planner takes (halos or a ring), the keys and
bytes each rank receives per call forward and backward (largest over ranks), against an
all-gather, the received keys held at once, and the work imbalance (for a ring, also the imbalance
of its steps, during which ranks wait for each other). These are predictions of the planner, not
measurements.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

from report import markdown_table

import maskc
from maskc import distributed as md
from maskc.errors import MaskcWarning

HEADS, HEAD_DIM, ITEMSIZE = 16, 128, 2
#: name → (spec, shardings, tile edge the plan is made on)
PATTERNS: dict[str, tuple[dict[str, Any], tuple[str, ...], int]] = {
    "causal window 4096": (
        {"name": "causal-window-4096", "causal": True, "pattern": {"window": {"before": 4095}}},
        ("contiguous",),
        128,
    ),
    "dense causal": (
        {"name": "dense-causal", "causal": True, "pattern": {"dense": {}}},
        ("zigzag", "contiguous"),
        512,
    ),
}


def predict(name: str, n: int, ranks: int, sharding: str, pattern: maskc.CompiledPattern) -> dict[str, Any]:
    start = time.perf_counter()
    plan = md.plan(pattern, ranks, sharding)
    size = md.CallSize(1, HEADS, HEADS, HEAD_DIM, HEAD_DIM, ITEMSIZE, lse_itemsize=4)
    received = [plan.bytes_received(r, size) for r in range(ranks)]
    keys = max(plan.keys_received(r) for r in range(ranks))
    return {
        "pattern": name,
        "n": n,
        "ranks": ranks,
        "sharding": sharding,
        "tile": pattern.block_n,
        "mode": plan.mode,
        "reason": plan.reason,
        "keys_received_max": keys,
        "bytes_fwd_max": max(f for f, _ in received),
        "bytes_bwd_max": max(b for _, b in received),
        "all_gather_bytes": (n - n // ranks) * size.key_bytes,
        "peak_keys_held": plan.peak_keys,
        "imbalance": plan.imbalance,
        "ring_step_imbalance": plan.ring_imbalance if plan.mode == "ring" else None,
        "planning_s": round(time.perf_counter() - start, 1),
    }


def gib(count: int) -> str:
    return f"{count / 2**30:.3f}" if count >= 2**30 else f"{count / 2**20:.1f} Mi"


def markdown(rows: list[dict[str, Any]]) -> str:
    header = ["pattern", "n", "P", "sharding", "mode", "keys received per rank", "GiB fwd", "GiB bwd",
              "all-gather GiB", "keys held at once", "work imbalance", "ring step imbalance"]  # fmt: skip
    cells = [
        [r["pattern"], f"{r['n']:,}", r["ranks"], r["sharding"], r["mode"], f"{r['keys_received_max']:,}",
         gib(r["bytes_fwd_max"]), gib(r["bytes_bwd_max"]), gib(r["all_gather_bytes"]), f"{r['peak_keys_held']:,}",
         f"{r['imbalance']:.2%}",
         "–" if r["ring_step_imbalance"] is None else f"{r['ring_step_imbalance']:.2%}"]
        for r in rows
    ]  # fmt: skip
    return markdown_table(header, cells, align="lrrllrrrrrrr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="4,8,64")
    parser.add_argument("--seq-lens", default="1048576,2097152")
    parser.add_argument("--patterns", default=",".join(PATTERNS), help=f"comma-separated, of {', '.join(PATTERNS)}")
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args()
    rows = []
    for name in args.patterns.split(","):
        spec, shardings, tile = PATTERNS[name]
        for n in (int(x) for x in args.seq_lens.split(",")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MaskcWarning)
                pattern = maskc.compile(maskc.Spec.model_validate(spec), seq_len=n, heads=HEADS, block_size=tile)
            for ranks in (int(x) for x in args.ranks.split(",")):
                for sharding in shardings:
                    rows.append(predict(name, n, ranks, sharding, pattern))
                    print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
