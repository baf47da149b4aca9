"""Issue 12's patterns on the GPU, each lowering on and off, against dense causal cuDNN and FlexAttention.

Run on a CUDA machine: python3 bench/bench_lowering.py [--quick] [--ns 32768] [--patterns all]
MASKC_BENCH_PROFILE=1 also prints one profiled forward+backward of each maskc case (report.profile_step).
bf16, B = 1, H = 16, D = 128, one process. Per n: dense causal SDPA (cuDNN) first; then per
pattern maskc with schedule="single" (one pass in token order) and schedule="auto" (the cost
model's passes), or those --schedules names ("split": every lowering taken, to measure one the cost
model declines), and FlexAttention with the equivalent mask_mod. Passes in orders of axes are read
in place by the kernels; a second process with MASKC_TRITON_READ_IN_PLACE=0 copies them instead
(rows "maskc_<schedule>_copies": the same passes, the cost model does not read the variable), and
one with MASKC_TRITON_PASSES_IN_TURN=0 merges passes that would run in turn ("maskc_<schedule>_merged").
Efficiency = effective TFLOP/s (4·B·H·D·active pairs / forward time; 3.5× that over forward+
backward) divided by cuDNN's in the same run; Flex ratios are Flex time / maskc time. Each maskc
output is checked against Flex's (relative difference printed). Axial runs at n = 65536 only (W =
256), as the issue states.
--quick: n = 32768 only (meant to take about 5 minutes on an H200; not yet measured).
Writes JSON and a markdown table to $OUT when OUT is set. Shares its helpers with bench_triton.py.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import triton
from bench_triton import (
    JSON_FILE,
    ROWS,
    count_pairs,
    first_call_and_times,
    graph_efficiency,
    graph_times,
    log,
    mask_mods,
    relative,
    time_fwd_bwd,
)
from report import markdown_table, profile_fwd_bwd
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import maskc
from maskc.backends.triton.passes import read_in_place_enabled
from maskc.backends.triton.turns import in_turn_enabled
from maskc.errors import MaskcWarning
from maskc.schedule import schedule_of

SPECS = Path(__file__).resolve().parent.parent / "specs"
B, H, D = 1, 16, 128
DTYPE = torch.bfloat16

#: name → (spec pattern dict, mask_mod); n-independent except BigBird's block table.
PATTERNS: dict[str, tuple[dict[str, Any], Callable]] = {
    "window_4096": (
        {"causal": True, "pattern": {"window": {"before": 4095, "after": 0}}},
        lambda b, h, qi, ki: (qi >= ki) & (qi - ki < 4096),
    ),
    "longformer": (
        {"pattern": [{"window": {"before": 256, "after": 256}}, {"global": {"tokens": [0]}}]},
        lambda b, h, qi, ki: ((qi - ki).abs() <= 256) | (qi == 0) | (ki == 0),
    ),
    "global_first_64": (
        {"pattern": [{"window": {"before": 256, "after": 256}}, {"global": {"first": 64}}]},
        lambda b, h, qi, ki: ((qi - ki).abs() <= 256) | (qi < 64) | (ki < 64),
    ),
    "streaming_llm": (
        {"causal": True, "pattern": [{"sink": {"count": 4}}, {"window": {"before": 1019, "after": 0}}]},
        lambda b, h, qi, ki: (qi >= ki) & ((qi - ki <= 1019) | (ki < 4)),
    ),
    "dilated_2": (
        {"pattern": {"window": {"before": 256, "after": 256, "dilation": 2}}},
        lambda b, h, qi, ki: ((qi - ki).abs() <= 512) & ((qi - ki) % 2 == 0),
    ),
    "strided": (
        {
            "causal": True,
            "block_size": 128,
            "pattern": [{"window": {"before": 128, "after": 0}}, {"stride": {"every": 128}}],
        },
        lambda b, h, qi, ki: (qi >= ki) & ((qi - ki <= 128) | ((qi - ki) % 128 == 0)),
    ),
    "fixed": (
        {
            "causal": True,
            "block_size": 128,
            "pattern": [{"block_local": {"size": 128}}]
            + [{"global": {"every": 128, "offset": o, "direction": "columns"}} for o in range(120, 128)],
        },
        lambda b, h, qi, ki: (qi >= ki) & ((qi // 128 == ki // 128) | (ki % 128 >= 120)),
    ),
    "axial_256": (
        {"pattern": {"axial": {"width": 256}}},
        lambda b, h, qi, ki: (qi // 256 == ki // 256) | (qi % 256 == ki % 256),
    ),
}


def compile_pattern(name: str, spec: dict[str, Any] | Path, n: int, schedule: str) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        source = spec if isinstance(spec, Path) else maskc.Spec.model_validate({"name": name, **spec})
        block = 64 if isinstance(spec, Path) else None
        return maskc.compile(source, seq_len=n, heads=H, block_size=block, schedule=schedule)


def _variant() -> str:
    """How this process runs passes, when not as by default: "_copies", "_merged" (bench docstring)."""
    return ("" if read_in_place_enabled() else "_copies") + ("" if in_turn_enabled() else "_merged")


def tflops(pairs: int, fwd: float, fwd_bwd: float) -> tuple[float, float]:
    flops = 4 * B * H * D * pairs
    return flops / fwd / 1e9, 3.5 * flops / fwd_bwd / 1e9


def dense_causal(n: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[float, float]:
    """Dense causal cuDNN TFLOP/s (forward, forward+backward) of this run; its rates replayed from a
    CUDA graph are logged beside them (the yardstick of the graphed rows)."""
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        dense = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True)  # noqa: E731
        fwd, fwd_bwd = time_fwd_bwd(dense, q, k, v)
        graphed = graph_times(dense, q, k, v, n * (n + 1) // 2)
    rate = tflops(n * (n + 1) // 2, fwd, fwd_bwd)
    log(n=n, impl="cudnn", pattern="dense_causal", fwd_ms=round(fwd, 3), fwdbwd_ms=round(fwd_bwd, 3),
        fwd_tflops=round(rate[0], 1), fwdbwd_tflops=round(rate[1], 1), **graphed)  # fmt: skip
    return rate


def bench_one(name: str, spec: Any, mask_mod: Callable | None, n: int, q, k, v, dense: tuple[float, float],
              schedules: tuple[str, ...] = ("single", "auto")) -> None:  # fmt: skip
    flex_out = None
    flex_row: dict[str, Any] = {}
    flex_graphed: dict[str, Any] = {}
    if mask_mod is not None:
        torch._dynamo.reset()
        block_mask = create_block_mask(mask_mod, None, None, n, n, device="cuda", _compile=True)
        flex = torch.compile(flex_attention, dynamic=False)

        def theirs(a, b, c):
            return flex(a, b, c, block_mask=block_mask)

        flex_out = theirs(q, k, v).detach()
        flex_row = dict(zip(("fwd_ms", "fwdbwd_ms"), time_fwd_bwd(theirs, q, k, v)))
        flex_graphed = graph_times(theirs, q, k, v, count_pairs(mask_mod, n))
    for schedule in schedules:
        pattern = compile_pattern(name, spec, n, schedule)
        pairs = int(pattern.stats().active_pairs)
        if mask_mod is not None and count_pairs(mask_mod, n) != pairs:
            log(n=n, pattern=name, error=f"mask mismatch: maskc {pairs} pairs vs mask_mod")
            return
        start = time.perf_counter()
        plan = schedule_of(pattern)
        plan_s = time.perf_counter() - start

        def ours(a, b, c, pattern=pattern):
            return maskc.attention(a, b, c, pattern, backend="triton")

        first, fwd, fwd_bwd = first_call_and_times(ours, q, k, v)
        profile_fwd_bwd(ours, q, k, v, f"{name}, schedule {schedule}")
        rate = tflops(pairs, fwd, fwd_bwd)
        row = {
            "n": n, "pattern": name, "impl": f"maskc_{schedule}{_variant()}",
            "passes": [p.label for p in plan[0].passes],
            "kernel_work_over_pairs": round(sum(s.kernel_work() for s in plan) / len(plan) / pairs, 3),
            "plan_s": round(plan_s, 2), "first_call_s": round(first, 1),
            "fwd_ms": round(fwd, 3), "fwdbwd_ms": round(fwd_bwd, 3),
            "fwd_eff": round(rate[0] / dense[0], 3), "fwdbwd_eff": round(rate[1] / dense[1], 3),
            **graph_times(ours, q, k, v, pairs),
        }  # fmt: skip
        if flex_out is not None:
            row["out_vs_flex"] = round(relative(ours(q, k, v), flex_out), 5)
            row["fwd_vs_flex"] = round(flex_row["fwd_ms"] / fwd, 2)
            row["fwdbwd_vs_flex"] = round(flex_row["fwdbwd_ms"] / fwd_bwd, 2)
        log(**row)
    if flex_row:
        rate = tflops(pairs, flex_row["fwd_ms"], flex_row["fwdbwd_ms"])
        log(n=n, pattern=name, impl="flex", fwd_ms=round(flex_row["fwd_ms"], 3),
            fwdbwd_ms=round(flex_row["fwdbwd_ms"], 3), fwd_eff=round(rate[0] / dense[0], 3),
            fwdbwd_eff=round(rate[1] / dense[1], 3), **flex_graphed)  # fmt: skip


def graphed_column(row: dict[str, Any]) -> str:
    """ "fwd / fwd+bwd" efficiency of a row replayed from a CUDA graph (against cuDNN's graphed rates of
    the same n), or empty."""
    dense = next((r for r in ROWS if r.get("impl") == "cudnn" and r.get("n") == row["n"]), {})
    found = graph_efficiency(row, dense)
    return " / ".join(f"{value:.3f}" for value in found.values())


def table() -> str:
    header = ["n", "pattern", "impl", "passes", "kernel work / pairs", "fwd eff", "fwd+bwd eff", "fwd vs flex",
              "fwd+bwd vs flex", "graphed eff"]  # fmt: skip
    rows = [
        [r["n"], r["pattern"], r["impl"], ", ".join(r.get("passes", [])), r.get("kernel_work_over_pairs", ""),
         r["fwd_eff"], r["fwdbwd_eff"], r.get("fwd_vs_flex", ""), r.get("fwdbwd_vs_flex", ""), graphed_column(r)]
        for r in ROWS
        if "fwd_eff" in r
    ]  # fmt: skip
    return markdown_table(header, rows)


def main() -> None:
    JSON_FILE["name"] = "bench_lowering.json"  # the shared `log` keeps this script's rows apart
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="32768,131072", help="comma-separated sequence lengths")
    parser.add_argument("--patterns", default="all", help="comma-separated names (see PATTERNS, and bigbird)")
    parser.add_argument("--quick", action="store_true", help="n = 32768 only")
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compiles take time)")
    parser.add_argument("--schedules", default="single,auto",
                        help="maskc schedules to time, comma-separated: single, auto, split (every lowering "
                             "taken, whatever the cost model predicts)")  # fmt: skip
    args = parser.parse_args()
    schedules = tuple(x.strip() for x in args.schedules.split(",") if x.strip())
    if not schedules or any(x not in ("single", "auto", "split") for x in schedules):
        parser.error(f"--schedules takes single, auto and split, comma-separated; got {args.schedules!r}")
    if args.quick:
        args.ns = "32768"
    log(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__)
    names = [*PATTERNS, "bigbird"] if args.patterns == "all" else args.patterns.split(",")
    for n in (int(x) for x in args.ns.split(",") if x):
        q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3))
        dense = dense_causal(n, q, k, v)
        for name in names:
            try:
                if name == "axial_256":
                    continue
                if name == "bigbird":
                    spec: Any = SPECS / "bigbird.yaml"
                    mod = mask_mods(n, compile_pattern(name, spec, n, "single"))["bigbird"]
                else:
                    spec, mod = PATTERNS[name]
                bench_one(name, spec, None if args.no_flex else mod, n, q, k, v, dense, schedules)
            except Exception as error:  # one failing pattern must not hide the others
                log(n=n, pattern=name, error=f"{type(error).__name__}: {str(error)[:300]}")
        del q, k, v
        torch.cuda.empty_cache()
    if "axial_256" in names:
        n = 65536
        q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3))
        spec, mod = PATTERNS["axial_256"]
        try:
            bench_one("axial_256", spec, None if args.no_flex else mod, n, q, k, v, dense_causal(n, q, k, v), schedules)
        except Exception as error:
            log(n=n, pattern="axial_256", error=f"{type(error).__name__}: {str(error)[:300]}")
    print(table())
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_lowering.md").write_text(table() + "\n")


if __name__ == "__main__":
    main()
