"""The merge of scheduled passes on a CUDA GPU: torch `merge_passes` against the fused kernel.

Run on a CUDA machine: python3 bench/bench_merge.py [--n 32768]
bf16, B = 1, H = 16, D = 128, two passes over every row, as the Sparse Transformer strided
schedule has (a residue-ordered pass and one in token order). Prints, for the forward alone and
forward + backward, each merge's time and the bytes bench/NOTES.md predicts it moves over that
time. The passes' own kernels and gathers are not in it: `bench/bench_triton.py` times whole calls.
Writes JSON to $OUT/bench_merge.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from triton.testing import do_bench

from maskc.backends.triton.merge import MergeTables, fused_merge
from maskc.schedule.merge import merge_passes
from maskc.schedule.passes import residue_positions

B, H, D, STRIDE = 1, 16, 128, 128
#: Predicted bytes per (B, H, n, D) element for two passes (bench/NOTES.md, fused merge entry).
PREDICTED = {"torch": {"forward": 78, "forward+backward": 152}, "fused": {"forward": 6, "forward+backward": 22}}


def passes(n: int) -> tuple[list[np.ndarray], list[torch.Tensor], list[torch.Tensor]]:
    """Two passes' row orders and random (out, lse) on the GPU."""
    orders = [residue_positions(n, STRIDE), np.arange(n)]
    outs = [torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in orders]
    lses = [torch.randn(B, H, n, device="cuda", requires_grad=True) for _ in orders]
    return orders, outs, lses


def timed(merge, outs: list[torch.Tensor], lses: list[torch.Tensor]) -> dict[str, float]:
    """Milliseconds of the forward alone and of forward + backward."""
    out, lse = merge(outs, lses)
    d_out, d_lse = torch.randn_like(out), torch.randn_like(lse)

    def both() -> None:
        o, s = merge(outs, lses)
        torch.autograd.backward((o, s), (d_out, d_lse))

    with torch.no_grad():
        forward = do_bench(lambda: merge(outs, lses))
    return {"forward": forward, "forward+backward": do_bench(both)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32768)
    n = parser.parse_args().n
    orders, outs, lses = passes(n)
    indices = [torch.as_tensor(o, device="cuda") for o in orders]
    tables = MergeTables.build(orders, [n, n], n, torch.device("cuda"))
    merges = {
        "torch": lambda o, s: merge_passes(o, s, indices, n),
        "fused": lambda o, s: fused_merge(o, s, tables),
    }
    elements = B * H * n * D
    results = {}
    print(f"n = {n}, B = {B}, H = {H}, D = {D}, bf16, two passes")
    print("| merge | pass | ms | predicted GB | GB/s at that |")
    print("|---|---|---|---|---|")
    for name, merge in merges.items():
        results[name] = timed(merge, outs, lses)
        for kind, ms in results[name].items():
            gigabytes = PREDICTED[name][kind] * elements / 1e9
            print(f"| {name} | {kind} | {ms:.3f} | {gigabytes:.2f} | {gigabytes / ms * 1e3:.0f} |")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "bench_merge.json").write_text(json.dumps({"n": n, "ms": results}, indent=2))


if __name__ == "__main__":
    main()
