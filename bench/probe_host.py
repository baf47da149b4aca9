"""How much of a maskc call's measured time is the host's: per pattern, one call's time as do_bench
reports it (the figure bench_triton.py prints), the host's time to issue the call (its Python, no
waiting on the GPU), and the GPU's time for a stream of calls issued back to back; then one
forward+backward profiled (each kernel's time).

Run on a CUDA machine: python3 bench/probe_host.py [--cases bigbird,longformer] [--n 32768]
bf16, B = 1, H = 16, D = 128, as bench_triton.py. A call whose host time is above its GPU time is
bound by the host: do_bench then reports the host's time, not the kernels'.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from report import profile_step
from triton.testing import do_bench

import maskc
from maskc.errors import MaskcWarning

SPECS = Path(__file__).resolve().parent.parent / "specs"
H, D = 16, 128


def host_and_stream_ms(call: Callable[[], object], calls: int = 50) -> tuple[float, float]:
    """(host ms a call, GPU ms a call) over `calls` calls issued back to back after a synchronisation."""
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    began = time.perf_counter()
    for _ in range(calls):
        call()
    host = (time.perf_counter() - began) * 1e3 / calls
    end.record()
    torch.cuda.synchronize()
    return host, start.elapsed_time(end) / calls


def probe(name: str, n: int) -> dict[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(SPECS / f"{name}.yaml", seq_len=n, heads=H, schedule="single")
    q, k, v = (torch.randn(1, H, n, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn_like(q)

    def forward() -> torch.Tensor:
        return maskc.attention(q, k, v, pattern, backend="triton")

    def forward_backward() -> None:
        forward().backward(grad)

    forward_backward()  # tunes every kernel
    row: dict[str, object] = {"case": name, "n": n}
    for step, call in (("fwd", forward), ("fwdbwd", forward_backward)):
        host, stream = host_and_stream_ms(call)
        row[f"{step}_do_bench_ms"] = round(do_bench(call, warmup=25, rep=100, return_mode="median"), 4)
        row[f"{step}_host_ms"] = round(host, 4)
        row[f"{step}_stream_ms"] = round(stream, 4)
    profile_step(forward_backward, f"{name}, forward+backward")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="bigbird,longformer")
    parser.add_argument("--n", type=int, default=32768)
    args = parser.parse_args()
    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)
    for name in args.cases.split(","):
        print(json.dumps(probe(name, args.n)), flush=True)


if __name__ == "__main__":
    main()
