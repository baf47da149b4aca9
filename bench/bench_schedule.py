"""Schedule benchmark on the CPU (issue 12): kernel work of the chosen passes against active pairs.

Target: kernel_work ≤ 2 × active pairs for every spec in specs/ whose pattern is static, at
n = 32768 and 131072, with the spec's own tile size (a grid spec, whose grid fixes n, at its own n
only). Prints one row per spec and size: active
pairs and kernel work per head (averaged over heads), the single pass's work, the passes chosen
and the time the planning took.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import maskc
from maskc.errors import MaskcWarning
from maskc.schedule import schedule_of

ROOT = Path(__file__).resolve().parent.parent
TARGET = 2.0


def row(name: str, spec: maskc.Spec, n: int) -> tuple[str, bool]:
    pattern = maskc.compile(spec, seq_len=n, schedule="auto")
    start = time.perf_counter()
    schedules = schedule_of(pattern)
    seconds = time.perf_counter() - start
    heads = [int(k) for k in pattern.head_layout]
    active = sum(pattern.layouts[k].element_count() for k in heads) / len(heads)
    work = sum(schedules[k].kernel_work() for k in heads) / len(heads)
    single = sum(schedules[k].single_work for k in heads) / len(heads)
    lowerings = sorted(
        {p.lowering + (f" mod {p.modulus}" if p.modulus > 1 else "") for s in schedules for p in s.passes}
    )
    ok = work <= TARGET * active
    line = (
        f"| {name} | {n:,} | {active:,.0f} | {single / active:.2f} | {work / active:.2f} | "
        f"{'ok' if ok else 'MISSED'} | {', '.join(lowerings)} | {seconds:.2f} |"
    )
    return line, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--specs", nargs="*", help="spec names (file stems) to run; default all static ones")
    args = parser.parse_args()
    warnings.simplefilter("ignore", MaskcWarning)
    print("| spec | n | active pairs / head | single work / active | kernel_work / active | ≤ 2× | passes | plan s |")
    print("|---|---|---|---|---|---|---|---|")
    missed = 0
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        spec = maskc.load(path)
        if spec.is_dynamic() or (args.specs and path.stem not in args.specs):
            continue
        for n in [spec.grid.tokens] if spec.grid is not None else args.sizes:
            line, ok = row(path.stem, spec, n)
            missed += not ok
            print(line, flush=True)
    print(f"\n{missed} row(s) above {TARGET}x the active pairs")


if __name__ == "__main__":
    main()
