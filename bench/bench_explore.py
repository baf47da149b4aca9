"""Server-side time of `maskc explore` per change, at n = 4096 (target: the mask redraws in ≤ 200 ms).

A change in the page is a spec the server has not seen, so each measured request is a fresh
variant of the spec (the window's `before` moved by one token, a new name), which misses both the
explorer's result caches and maskc's compile cache. Per spec this script measures, over R variants:
  mask      POST /api/mask: compile, the coloured mask picture (PNG), densities, growth, warnings
  analysis  POST /api/analysis: min_layers (`maskc.verify`) and the recognised model
  reach     POST /api/reach at n = 512 (the page's default), L = the spec's depth or 12
  http      /api/mask as the page sees it: the same work plus JSON and a local HTTP round trip
and prints median and worst in ms. Usage: python bench/bench_explore.py [--n N] [--reps R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
import warnings
from collections.abc import Callable
from typing import Any

from maskc.errors import MaskcWarning
from maskc.explore import api
from maskc.explore.server import serving

SPECS: dict[str, dict[str, Any]] = {
    "Longformer window 512 + global": {
        "heads": 12,
        "pattern": [{"window": {"before": 256, "after": 256}}, {"global": {"tokens": [0]}}],
        "layers": [{"count": 12}],
    },
    "BigBird 3 window + 2 global + 3 random blocks": {
        "heads": 12,
        "pattern": [
            {"window": {"before": 1, "after": 1, "granularity": "block"}},
            {"global": {"first": 128}},
            {"random": {"per_row": 3}},
        ],
        "layers": [{"count": 12}],
    },
    "causal window 1024 + 4 sinks": {
        "causal": True,
        "pattern": [{"sink": {"count": 4}}, {"window": {"before": 1024, "after": 0}}],
        "layers": [{"count": 32}],
    },
    "Sparse Transformer fixed, 2 heads": {
        "causal": True,
        "block_size": 128,
        "heads": 2,
        "pattern": {"block_local": {"size": 128}},
        "head_patterns": [{"heads": [1], "pattern": {"global": {"every": 128, "offset": 127, "direction": "columns"}}}],
    },
    "axial 64 + stride 64 + dilated window": {
        "pattern": [
            {"axial": {"width": 64}},
            {"stride": {"every": 64}},
            {"window": {"before": 64, "after": 64, "dilation": 2}},
        ],
    },
}


def variant(base: dict[str, Any], k: int) -> dict[str, Any]:
    """The spec with a new name and, where it has a window, `before` moved by k: a change the server has not seen."""
    data = json.loads(json.dumps({"name": f"bench-{k}", **base}))
    pattern = data["pattern"] if isinstance(data["pattern"], list) else [data["pattern"]]
    for node in pattern:
        if "window" in node and node["window"].get("granularity") != "block":
            node["window"]["before"] += k
    return data


def timed(call: Callable[..., tuple[int, dict[str, Any]]], *args: Any) -> float:
    started = time.perf_counter()
    status, body = call(*args)
    elapsed = 1000 * (time.perf_counter() - started)
    if status != 200:
        raise SystemExit(f"request failed: {body}")
    return elapsed


def http_mask(url: str, data: dict[str, Any], n: int) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url + "api/mask", json.dumps({"data": data, "n": n}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, json.loads(response.read())


def measure(url: str, base: dict[str, Any], n: int, reps: int) -> dict[str, list[float]]:
    """ms per request kind over `reps` fresh variants of one spec."""
    rows: dict[str, list[float]] = {"mask": [], "http": [], "analysis": [], "reach": []}
    for k in range(reps):
        data = variant(base, 2 * k)
        request = {"data": data, "n": n}
        depth = sum(entry["count"] for entry in data.get("layers", [])) or 12
        reach = {"data": data, "n": min(512, n), "layers": depth}
        rows["mask"].append(timed(api.mask, request, "bench.yaml"))
        rows["analysis"].append(timed(api.analysis, request, "bench.yaml"))
        rows["reach"].append(timed(api.reach, reach, "bench.yaml"))
        rows["http"].append(timed(http_mask, url, variant(base, 2 * k + 1), n))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    warnings.simplefilter("ignore", MaskcWarning)
    api.mask({"data": variant(SPECS["Longformer window 512 + global"], 10_000), "n": args.n}, "bench.yaml")  # warm-up
    print(f"maskc explore, server ms per change at n = {args.n} (median / worst of {args.reps} fresh variants)")
    print(f"{'spec':48s} {'mask':>15s} {'http mask':>15s} {'analysis':>15s} {'reach n=512':>15s}")
    with serving("name: x\npattern: {dense: {}}\n", "bench.yaml") as server:
        for name, base in SPECS.items():
            rows = measure(server.url, base, args.n, args.reps)
            cells = [f"{statistics.median(v):7.0f} / {max(v):5.0f}" for v in rows.values()]
            print(f"{name:48s} {cells[0]:>15s} {cells[1]:>15s} {cells[2]:>15s} {cells[3]:>15s}")


if __name__ == "__main__":
    main()
