"""Per-kernel GPU times of one pattern: maskc's kernels against FlexAttention's, in one process.

Run on a CUDA machine: python3 bench/bench_kernels.py [--pattern mistral_swa] [--n 32768]
    [--try dkdv:64x128x8x2,dq:128x64x8x4,...]
Where bench_triton.py says how fast a call is, this says where the time goes: the median wall time
of a forward+backward step (do_bench) of maskc and of compiled FlexAttention (same inputs, same
mask), then torch.profiler's mean device time of every kernel of the step. `--try` also times
maskc with one kernel pinned to the given configuration (BLOCK_M x BLOCK_N x warps x stages), one
at a time, the others tuned.
Writes JSON to $OUT/bench_kernels.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import triton
from bench_triton import DTYPE, B, D, H, compile_spec, mask_mods
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from torch.profiler import ProfilerActivity, profile
from triton.testing import do_bench

import maskc
from maskc.backends.triton import tuning
from maskc.backends.triton.tuning import KernelConfig

STEPS = 10


def kernel_times(step: Callable[[], None]) -> dict[str, float]:
    """Median wall µs of a step (do_bench), then the mean device µs per step of every kernel it launches."""
    totals: dict[str, float] = {"step (wall)": 1e3 * do_bench(step, warmup=25, rep=200, return_mode="median")}
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            step()
        torch.cuda.synchronize()
    kernels: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name[:60]] += event.device_time / STEPS
    return totals | dict(sorted(kernels.items(), key=lambda item: -item[1]))


def fwd_bwd_step(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Callable[[], None]:
    g = torch.randn_like(fn(q, k, v))

    def step() -> None:
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(g)

    return step


def parse_config(text: str) -> tuple[str, KernelConfig]:
    kernel, shape = text.split(":")
    return kernel, KernelConfig(*(int(x) for x in shape.split("x")))


def pinned(kernel: str, config: KernelConfig) -> Callable:
    """tuning.candidates with `kernel` restricted to `config` (a single candidate is not timed)."""
    original = tuning.candidates

    def candidates(name: str, *args: Any) -> list[KernelConfig]:
        return [config] if name == kernel else original(name, *args)

    return candidates


def report(label: str, times: dict[str, float], rows: list[dict[str, Any]]) -> None:
    rows.append({"label": label, "kernels_us": {k: round(v, 1) for k, v in times.items()}})
    print(f"\n{label}: µs per forward+backward")
    for name, us in times.items():
        print(f"  {us:9.1f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="mistral_swa")
    parser.add_argument("--n", type=int, default=32768)
    parser.add_argument("--try", dest="tries", default="", help="comma-separated kernel:MxNxWARPSxSTAGES")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = [
        {
            "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "triton": triton.__version__,
            "pattern": args.pattern,
            "n": args.n,
        }
    ]
    print(rows[0])
    n = args.n
    mask_mod = mask_mods(n, compile_spec("bigbird", n, block_size=64)).get(args.pattern)
    if mask_mod is None:
        parser.error(f"--pattern: no FlexAttention mask_mod for {args.pattern!r} in bench_triton.mask_mods")
    q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3))
    pattern = compile_spec(args.pattern, n)

    def ours(a, b, c):
        return maskc.attention(a, b, c, pattern, backend="triton")

    report("maskc (tuned)", kernel_times(fwd_bwd_step(ours, q, k, v)), rows)
    rows[-1]["configs"] = {key[1]: vars(config) for key, config in tuning.chosen_configs().items()}
    print("  tuned:", rows[-1]["configs"])
    for text in filter(None, args.tries.split(",")):
        kernel, config = parse_config(text)
        tuning._CHOSEN.clear()
        original, tuning.candidates = tuning.candidates, pinned(kernel, config)
        try:
            report(f"maskc {text}", kernel_times(fwd_bwd_step(ours, q, k, v)), rows)
        except Exception as error:  # a configuration that does not fit is reported, not fatal
            print(f"\nmaskc {text}: {type(error).__name__}: {str(error)[:200]}")
        finally:
            tuning.candidates = original
    block_mask = create_block_mask(mask_mod, None, None, n, n, device="cuda", _compile=True)
    flex = torch.compile(flex_attention, dynamic=False)
    report("flex", kernel_times(fwd_bwd_step(lambda a, b, c: flex(a, b, c, block_mask=block_mask), q, k, v)), rows)
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_kernels.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
