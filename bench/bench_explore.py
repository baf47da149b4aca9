"""Server-side time of `maskc explore` per change, at n = 4096 (target: the mask redraws in ≤ 200 ms).

A change in the page is a spec the server has not seen, so each measured request is a fresh
variant of the spec (the window's `before` moved by one token, a new name), which misses both the
explorer's result caches and maskc's compile cache. Per spec this script measures, over R variants:
  mask      POST /api/mask: compile, the coloured mask picture (PNG), densities, growth, warnings
  analysis  POST /api/analysis: min_layers (`maskc.verify`) and the recognised model
  reach     POST /api/reach at n = 512 (the page's default), L = the spec's depth or 12
  http      /api/mask as the page sees it: the same work plus JSON and a local HTTP round trip
and prints median and worst in ms. With --browser it also times the whole redraw in the headless
chromium the tests use (tests/browser.py): from a control's input event (the spec's name, so each
change is a spec the server has not seen) through the page's debounce, the request and the drawing
of the new panels to the decoded mask image.
Usage: python bench/bench_explore.py [--n N] [--reps R] [--browser]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

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


#: Sets the name field (an input event, as typing does) and calls back with the ms until the panels
#: the answer draws hold a decoded mask image.
_REDRAW = """
const [name, done] = [arguments[0], arguments[arguments.length - 1]];
const observer = new MutationObserver(() => {
  observer.disconnect();
  document.getElementById("mask-img-0").decode().then(() => requestAnimationFrame(() => done(performance.now() - t0)));
});
observer.observe(document.getElementById("panels"), {childList: true});
const t0 = performance.now();
const field = document.getElementById("f-name");
field.value = name;
field.dispatchEvent(new Event("input", {bubbles: true}));
"""


@contextmanager
def browser() -> Iterator[Any]:
    """The tests' headless chromium (tests/browser.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from browser import chromium

    with tempfile.TemporaryDirectory() as downloads, chromium(Path(downloads)) as driver:
        driver.set_script_timeout(120)
        yield driver


def settled(driver: Any) -> None:
    """The tests' wait for the page to answer every change (tests/browser.py), with a longer timeout."""
    from browser import settle

    settle(driver, timeout=120)


def page_redraws(driver: Any, base: dict[str, Any], n: int, reps: int) -> list[float]:
    """ms from a control's change to the redrawn mask in the page, over `reps` fresh names."""
    start = yaml.safe_dump({"name": "bench", "seq_len": n, **base}, sort_keys=False)
    out = []
    with serving(start, "bench.yaml") as server:
        driver.get(server.url)
        settled(driver)
        for k in range(reps):
            out.append(driver.execute_async_script(_REDRAW, f"page-{n}-{k}"))
            settled(driver)  # the analysis and reach requests that follow, before the next change
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--browser", action="store_true", help="also time the whole redraw in headless chromium")
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
    if args.browser:
        print(f"\nthe page in headless chromium, ms from a control's change to the redrawn mask at n = {args.n}")
        with browser() as driver:
            for name, base in SPECS.items():
                times = page_redraws(driver, base, args.n, args.reps)
                print(f"{name:48s} {statistics.median(times):7.0f} / {max(times):5.0f}")


if __name__ == "__main__":
    main()
