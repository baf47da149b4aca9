"""Cost of content-based sparsity: cluster assignment and layout build against the attention itself.

A cluster pattern (Routing Transformer: kmeans; Reformer: lsh) is decided at run time, so every
call pays for the assignment and for laying out the resolved pattern before any attention runs.
This script measures, per method, at one n:
  assign   cluster_labels on q and k (on the device of the tensors)
  resolve  resolve_dynamic: assignment + one block layout per head (the layout build runs on the CPU)
  attend   maskc.attention on the resolved pattern (forward)
  e2e      maskc.attention on the dynamic pattern (resolve + attend, as a user calls it)
  dense    dense causal attention (torch scaled_dot_product_attention), for scale
and the stored-tile fraction of the resolved layouts (what the kernel computes against dense).

On a GPU: n = 32768, backend "triton", bf16. Without CUDA: n = 4096, backend "cpu", float32.
Usage: python bench/bench_cluster.py [--n N] [--heads H] [--dim D] [--clusters C] [--reps R]
Prints one table; writes JSON to $OUT/bench_cluster.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import maskc
from maskc.clustering import cluster_labels, resolve_dynamic
from maskc.errors import MaskcWarning


def _seconds(fn: Callable[[], Any], reps: int, device: torch.device) -> float:
    """Median wall time of `fn` over `reps` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _stored_fraction(resolved: list[maskc.CompiledPattern]) -> float:
    """Stored tile area over n², averaged over heads and batch."""
    return statistics.fmean(pattern.stats().tile_density for pattern in resolved)


def _record(row: dict[str, Any], key: str, measure: Callable[[], float]) -> None:
    """row[key] = the measured figure, or the error under row["errors"] (other figures still get measured)."""
    try:
        row[key] = measure()
    except Exception as err:  # a failing step must not hide the figures of the others
        row[key] = None
        row.setdefault("errors", {})[key] = f"{type(err).__name__}: {err}"[:300]


def _measure(method: str, args: argparse.Namespace, device: torch.device, backend: str) -> dict[str, Any]:
    clusters = args.clusters or 2 * round(math.sqrt(args.n) / 2)
    params = maskc.Cluster(clusters=clusters, method=method, seed=0)
    spec = maskc.Spec(name=f"cluster-{method}", causal=True, pattern=params, heads=args.heads)
    pattern = maskc.compile(spec, seq_len=args.n)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, args.heads, args.n, args.dim, generator=gen).to(device, dtype) for _ in range(3))
    row: dict[str, Any] = {"method": method, "n": args.n, "heads": args.heads, "dim": args.dim, "clusters": clusters}
    _record(row, "assign_s", lambda: _seconds(lambda: cluster_labels(params, q, k), args.reps, device))
    _record(row, "resolve_s", lambda: _seconds(lambda: resolve_dynamic(pattern, q, k), args.reps, device))
    resolved = resolve_dynamic(pattern, q, k)
    _record(row, "stored_tiles_vs_dense", lambda: _stored_fraction(resolved))
    attend = lambda: maskc.attention(q, k, v, resolved[0], backend=backend)  # noqa: E731
    _record(row, "attend_s", lambda: _seconds(attend, args.reps, device))
    end_to_end = lambda: maskc.attention(q, k, v, pattern, backend=backend)  # noqa: E731
    _record(row, "e2e_s", lambda: _seconds(end_to_end, args.reps, device))
    causal = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    _record(row, "dense_causal_s", lambda: _seconds(causal, args.reps, device))
    _record(row, "resolve_over_attend", lambda: row["resolve_s"] / row["attend_s"])
    return row


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32768 if cuda else 4096)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, help="default: the even number nearest √n")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    backend = "triton" if cuda else "cpu"
    where = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"maskc cluster bench: {where}, torch {torch.__version__}, backend {backend}")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)  # rows with no key in their cluster are expected
        for method in ("kmeans", "lsh"):
            try:
                rows.append(_measure(method, args, device, backend))
            except Exception as err:  # one failing method must not hide the other's figures
                rows.append({"method": method, "n": args.n, "error": f"{type(err).__name__}: {err}"[:300]})
    columns = {
        "assign s": "assign_s",
        "resolve s": "resolve_s",
        "attend s": "attend_s",
        "e2e s": "e2e_s",
        "dense causal s": "dense_causal_s",
        "tiles/dense": "stored_tiles_vs_dense",
        "resolve/attend": "resolve_over_attend",
    }
    print(f"{'method':<8} {'n':>6} {'c':>4} " + " ".join(f"{c:>14}" for c in columns))
    for row in rows:
        if "error" in row:
            print(f"{row['method']:<8} {row['n']:>6}  error: {row['error']}")
            continue
        cells = " ".join(f"{'failed':>14}" if row[key] is None else f"{row[key]:>14.4f}" for key in columns.values())
        print(f"{row['method']:<8} {row['n']:>6} {row['clusters']:>4} {cells}")
        for key, error in row.get("errors", {}).items():
            print(f"         {key} failed: {error}")
    print("times in seconds (median); resolve = assign + layout build; stored tiles = kernel work against dense")
    out = os.environ.get("OUT")
    if out:
        result = {"device": where, "torch": torch.__version__, "backend": backend, "rows": rows}
        Path(out, "bench_cluster.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
