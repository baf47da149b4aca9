"""Compile-time benchmark (issue 3): layout construction cost on this CPU.

Targets: a causal window of 4096 at n = 1,048,576 with 64-wide tiles in ≤ 50 ms; every spec in
specs/ at n = 131072 in ≤ 200 ms, memory proportional to the stored tiles. Prints measured
figures: median of several fresh compiles (the compile cache is bypassed) and peak traced memory.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
import warnings
from pathlib import Path

import maskc
from maskc import compiler
from maskc.errors import MaskcWarning

ROOT = Path(__file__).resolve().parent.parent


def fresh_compile_ms(spec: maskc.Spec, n: int, repeats: int) -> tuple[float, maskc.CompiledPattern]:
    """Median wall time of compiling without the cache."""
    times, pattern = [], None
    for _ in range(repeats):
        compiler.clear_cache()
        start = time.perf_counter()
        pattern = maskc.compile(spec, seq_len=n)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), pattern


def peak_mib(spec: maskc.Spec, n: int) -> float:
    compiler.clear_cache()
    tracemalloc.start()
    maskc.compile(spec, seq_len=n)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def row(name: str, spec: maskc.Spec, n: int, repeats: int, target_ms: float) -> str:
    ms, pattern = fresh_compile_ms(spec, n, repeats)
    tiles = sum(layout.nnz for layout in pattern.layouts)
    ir_mib = sum(layout.nbytes() for layout in pattern.layouts) / 2**20
    verdict = "ok" if ms <= target_ms else "MISSED"
    return (
        f"| {name} | {n:,} | {tiles:,} | {ms:.1f} | {target_ms:.0f} | {verdict} | "
        f"{peak_mib(spec, n):.1f} | {ir_mib:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    warnings.simplefilter("ignore", MaskcWarning)
    print("| pattern | n | stored tiles | compile ms (median) | target ms | | peak MiB | IR MiB |")
    print("|---|---|---|---|---|---|---|---|")
    swa = maskc.Spec(name="causal window 4096", causal=True, pattern={"window": {"before": 4096, "after": 0}})
    print(row(swa.name, swa, 1 << 20, args.repeats, 50))
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        spec = maskc.load(path)
        n = spec.seq_len if spec.grid is not None else 131072  # a grid fixes n
        print(row(path.stem, spec, n or 131072, args.repeats, 200))


if __name__ == "__main__":
    main()
