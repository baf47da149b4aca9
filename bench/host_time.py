"""Host time of maskc's Triton calls on one GPU: what a call costs the CPU, and where it goes.

`do_bench` (and any stream of calls waiting on the host) counts the host time a call spends before
its first kernel starts, so a 2 ms kernel with 0.1 ms of Python in front of it measures 5 % slower.
For each case this prints, per call, the host time of a forward and of a forward+backward measured
(with maskc's launch memory, then with Triton's own launches: MASKC_FAST_LAUNCH=0)
while the GPU is held busy by a sleep kernel (so the host never waits on it; a call that reads a value
back to the host shows as the sleep's length) and the part of a forward's spent in Triton's own
launch path, then the busiest Python functions of 100 forwards under cProfile. Each figure is the best
of three rounds of --calls calls, after as many untimed ones. Keep --calls small: CUDA's launch queue
holds about a thousand launches, and once the blocked GPU lets it fill, the host waits as if it had
synchronised (a run-time layout's forward+backward launches some forty kernels). Cases: the
causal window 4096 (specs/mistral_swa.yaml), packed documents with a causal window 1024 inside each,
top-k blocks, LSH and k-means with held centroids (bench_runtime's cases), and BigBird and Longformer
(bench_triton's), n = 32768, H = 16, D = 128, bf16.

    python3 bench/host_time.py [--cases window,docwindow,topk,lsh,kmeans_held,bigbird,longformer] [--calls 5]
        [--sync-debug]

docwindow's calls share one documents tensor, so after the first they reuse its tables (a model's
later layers; backends/triton/reuse.py); MASKC_REUSE_LAYOUT=0 times a build in every call.

With --sync-debug a warm forward and forward+backward of each case run under torch's synchronisation
debug mode set to error, so the first operation that waits on the GPU prints where it was called.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from bench_runtime import LENGTHS, compiled
from bench_triton import compile_spec, triton_launches

import maskc

H, D, N = 16, 128, sum(LENGTHS)
SLEEP_CYCLES = 4_000_000_000  # ~2 s at H200 clocks: longer than any batch of host calls below
ROUNDS = 3


def cases() -> dict[str, Callable[[], Callable]]:
    """Each case's call (q, k, v) -> out, built on demand."""

    def window() -> Callable:
        pattern = compile_spec("mistral_swa", N)
        return lambda a, b, c: maskc.attention(a, b, c, pattern, backend="triton")

    def docwindow() -> Callable:
        part = {"intersect": [{"document": {}}, {"window": {"before": 1023, "after": 0}}]}
        pattern = compiled({"name": "docwindow", "causal": True, "pattern": part}, N)
        documents = torch.as_tensor(maskc.ids_from_lengths(LENGTHS), device="cuda")[None]
        return lambda a, b, c: maskc.attention(a, b, c, pattern, backend="triton", documents=documents)

    def topk() -> Callable:
        parts = [{"window": {"before": 511, "after": 0}}, {"topk": {"blocks": 16}}, {"sink": {"count": 4}}]
        spec = {"name": "nsa", "causal": True, "block_size": 64, "pattern": parts}
        pattern = compiled(spec, N)
        return lambda a, b, c: maskc.attention(a, b, c, pattern, backend="triton")

    def clusters(method: str) -> Callable[[], Callable]:
        """bench_runtime's cluster cases: LSH with 64 buckets, k-means with √n centroids held between
        calls (maskc.nn.ClusterCentroids, one moving-average update from random q and k), causal."""

        def build() -> Callable:
            count = 64 if method == "lsh" else round(N**0.5)
            spec = {"name": method, "causal": True, "pattern": {"cluster": {"clusters": count, "method": method}}}
            pattern = compiled(spec, N)
            centroids = None
            if method == "kmeans":
                module = maskc.nn.ClusterCentroids(H, count, D).cuda()
                module.update(*(torch.randn(1, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in "qk"))
                centroids = module.centroids
            return lambda a, b, c: maskc.attention(a, b, c, pattern, backend="triton", centroids=centroids)

        return build

    def static(name: str) -> Callable[[], Callable]:
        """A catalogue spec's call (bench_triton's static patterns: the Gluon kernels walk its long
        lines as chunks, so a forward launches a merge too)."""

        def build() -> Callable:
            pattern = compile_spec(name, N)
            return lambda a, b, c: maskc.attention(a, b, c, pattern, backend="triton")

        return build

    return {"window": window, "docwindow": docwindow, "topk": topk, "bigbird": static("bigbird"),
            "longformer": static("longformer"), "lsh": clusters("lsh"), "kmeans_held": clusters("kmeans")}  # fmt: skip


def host_us(step: Callable[[], None], calls: int, rounds: int = ROUNDS) -> float:
    """Host µs per call of `step`, the GPU held busy meanwhile (its queue never drains): the best of
    `rounds` rounds of `calls` calls, after `calls` untimed ones, so that the figure comes nearer the
    steady state a benchmark's hundreds of calls see. On one GPU host, three calls timed once (this
    function before) read 1090 µs a forward of documents with a window, while do_bench timed the whole
    call at 0.664 ms; cold calls (the specialising interpreter, the caches) are one suspect, not
    confirmed."""
    for _ in range(calls):
        step()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(rounds):
        torch.cuda._sleep(SLEEP_CYCLES)
        start = time.perf_counter()
        for _ in range(calls):
            step()
        best = min(best, time.perf_counter() - start)
        torch.cuda.synchronize()
    return best / calls * 1e6


def triton_launch_host_us(forward: Callable[[], None], forward_backward: Callable[[], None], calls: int) -> dict:
    """`host_us` of both steps with Triton's own launches (`bench_triton.triton_launches`), against
    which the launch memory (backends/triton/launching.py) is measured."""
    with triton_launches():
        return {"triton_launch_fwd_host_us": round(host_us(forward, calls), 1),
                "triton_launch_fwdbwd_host_us": round(host_us(forward_backward, calls), 1)}  # fmt: skip


def launch_us(step: Callable[[], None], calls: int) -> dict[str, float]:
    """Host µs per call of `step` spent in Triton's launch path, the GPU held busy as in `host_us`
    (the mean over every call `host_us` makes, its untimed ones too): the whole of `JITFunction.run`
    (argument specialisation, cache lookup, the launcher), the launcher alone (`CudaLauncher.__call__`:
    scratch allocation, descriptor encoding, the C launch) and its tensor descriptors' encoding
    (`make_tensordesc_arg`)."""
    from triton.backends.nvidia import driver
    from triton.runtime.jit import JITFunction

    targets = {"triton_launch": (JITFunction, "run"), "launcher": (driver.CudaLauncher, "__call__"),
               "descriptors": (driver, "make_tensordesc_arg")}  # fmt: skip
    spent = dict.fromkeys(targets, 0.0)
    originals = {name: getattr(owner, attribute) for name, (owner, attribute) in targets.items()}

    def timed(name: str) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    for name, (owner, attribute) in targets.items():
        setattr(owner, attribute, timed(name))
    try:
        host_us(step, calls)
    finally:
        for name, (owner, attribute) in targets.items():
            setattr(owner, attribute, originals[name])
    return {name: total / (calls * (ROUNDS + 1)) * 1e6 for name, total in spent.items()}  # untimed calls too


def profile(step: Callable[[], None], calls: int = 100, rows: int = 25) -> str:
    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        step()
    torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(rows)
    return text.getvalue()


def first_sync(step: Callable[[], None]) -> str:
    """Where `step` first waits on the GPU (torch's sync debug mode as errors), or 'none'."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    except RuntimeError:
        return "".join(traceback.format_exc(limit=-8))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="window,docwindow,topk")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--sync-debug", action="store_true")
    args = parser.parse_args()
    q, k, v = (torch.randn(1, H, N, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    rows = []
    for name in args.cases.split(","):
        call = cases()[name]()
        out = call(q, k, v)
        grad = torch.randn_like(out)
        out.backward(grad)  # compiles and tunes

        def forward(call: Callable = call) -> None:
            call(q, k, v)

        def forward_backward(call: Callable = call, grad: torch.Tensor = grad) -> None:
            q.grad = k.grad = v.grad = None
            call(q, k, v).backward(grad)

        if args.sync_debug:
            print(f"== first sync, forward: {name}\n{first_sync(forward)}", flush=True)
            print(f"== first sync, forward+backward: {name}\n{first_sync(forward_backward)}", flush=True)
        row = {"case": name, "fwd_host_us": round(host_us(forward, args.calls), 1),
               "fwdbwd_host_us": round(host_us(forward_backward, args.calls), 1),
               **triton_launch_host_us(forward, forward_backward, args.calls),
               **{f"fwd_{name}_us": round(us, 1) for name, us in launch_us(forward, args.calls).items()}}  # fmt: skip
        print(json.dumps(row), flush=True)
        print(f"== cProfile, 100 forwards: {name}\n{profile(forward)}", flush=True)
        rows.append(row)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "host_time.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
