"""Reachability benchmark (issue 4): `maskc.verify` wall time on this CPU, compile included.

Targets: a causal window (before 4096, after 0) at n = 131073 with L = 32 verified in ≤ 2 s;
min_layers of a window of 512 (256 each side) plus global token 0 at n = 1,048,576 in ≤ 10 s;
every spec in specs/ at its own seq_len in ≤ 5 s. Prints measured figures: the best of a few
runs, each starting from an empty compile cache.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import maskc
from maskc import compiler
from maskc.errors import MaskcWarning
from maskc.reach.search import BitEngine
from maskc.reach.stack import build_stack
from maskc.verify import Report, verify

ROOT = Path(__file__).resolve().parent.parent


def timed(spec: maskc.Spec, layers: int, repeats: int) -> tuple[float, Report]:
    """Best wall time (s) of verify() from a cold compile cache, and its report."""
    best, report = float("inf"), None
    for _ in range(repeats):
        compiler.clear_cache()
        start = time.perf_counter()
        report = verify(spec, layers)
        best = min(best, time.perf_counter() - start)
    assert report is not None
    return best, report


def row(name: str, spec: maskc.Spec, layers: int, repeats: int, target_s: float) -> str:
    seconds, report = timed(spec, layers, repeats)
    verdict = "proven" if report.reachable else "refuted"
    min_layers = "never" if report.min_layers is None else str(report.min_layers)
    status = "ok" if seconds <= target_s else "MISSED"
    return (
        f"| {name} | {report.seq_len:,} | {layers} | {verdict} | {min_layers} | {seconds:.2f} | {target_s:.0f} | "
        f"{status} | {report.method} |"
    )


def bit_parallel_row(name: str, spec: maskc.Spec, layers: int) -> str:
    """The bit-parallel engine on a spec that another engine proves, for comparison (one run, CPU time)."""
    compiler.clear_cache()
    wall, cpu = time.perf_counter(), time.process_time()
    engine = BitEngine(build_stack(spec), "forced for comparison")
    outcome = engine.search(layers, None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    found = "never" if outcome.min_layers is None else str(outcome.min_layers)
    timing = f"{wall:.2f} (CPU {cpu:.2f})"
    return f"| {name} (bit-parallel) | {spec.seq_len:,} | {layers} | | {found} | {timing} | | | {engine.method} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=12, help="L for the specs in specs/")
    args = parser.parse_args()
    warnings.simplefilter("ignore", MaskcWarning)
    print("| pattern | n | L | verdict | min_layers | seconds (best) | target s | | method |")
    print("|---|---|---|---|---|---|---|---|---|")
    swa = maskc.Spec(
        name="causal window 4096", seq_len=131073, causal=True, pattern={"window": {"before": 4096, "after": 0}}
    )
    print(row(swa.name, swa, 32, args.repeats, 2))
    longformer = maskc.Spec(
        name="window 512 + global 0",
        seq_len=1 << 20,
        pattern=[{"window": {"before": 256, "after": 256}}, {"global": {"tokens": [0]}}],
    )
    print(row(longformer.name, longformer, 1, args.repeats, 10))
    print(bit_parallel_row("natten_2d", maskc.load(ROOT / "specs" / "natten_2d.yaml"), 21))
    specs = sorted((ROOT / "specs").glob("*.yaml"))
    if not specs:
        print("(specs/ holds no spec files)")
    for path in specs:
        print(row(path.stem, maskc.load(path), args.layers, args.repeats, 5))


if __name__ == "__main__":
    main()
