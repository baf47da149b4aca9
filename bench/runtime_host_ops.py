"""Host work of one call of a run-time pattern, on the CPU: torch ops, device→host reads and host→device
uploads of maskc's own code (the layout build and the launches' set-up, not the kernels), per function.

Run: TRITON_INTERPRET=1 python3 bench/runtime_host_ops.py [--n 2048] [--block 64]
(MASKC_CHECK_DOCUMENTS=async unless set otherwise: the documents' order is checked as on a GPU, where
the default check reads nothing back.)
The cases of bench_runtime.py at a small n (documents of the same proportions): document-causal,
documents with a causal window inside each, top-k 16 + causal window + 4 sinks, and LSH buckets in
cluster order (labelled by torch here; on a GPU by one kernel, with fewer ops). Each is called once to
fill the caches (plans, kernels, static maps), then counted on a second forward and a
forward+backward (tests/hostops.py counts; tests/test_runtime_host.py bounds them).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")
# the documents' order checked as on a GPU by default (no read back; maskc.documents.CHECK_DOCUMENTS)
os.environ.setdefault("MASKC_CHECK_DOCUMENTS", "async")
# every call builds its layout, as a new batch's first layer does (a later layer with the same documents
# tensor reuses the first one's tables: backends/triton/reuse.py)
os.environ.setdefault("MASKC_REUSE_LAYOUT", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostops import runtime_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    args = parser.parse_args()
    for case in runtime_cases(args.n, args.block, args.heads):
        for backward in (False, True):
            counts = case.count(backward)
            print(
                f"\n## {case.name}, {'forward+backward' if backward else 'forward'}: "
                f"{counts.total_ops} ops, {counts.total_reads} reads, {counts.total_uploads} uploads"
            )
            print(counts.table())
            for caller, what in counts.events:
                print(f"    {what} in {caller}")


if __name__ == "__main__":
    main()
