"""CPU backend timings: a 512-wide window at n = 65536, and the sparse/dense ratio at n = 8192.

Prints measured figures (wall-clock seconds, best of `--repeat`); not a test. Target: the forward
at n = 65536, H = 1, D = 64, float32 in at most 5 s on a 2-core CPU. "cold" includes building
the element CSR of every chunk (an empty plan cache); "warm" reuses the cached plans, as a
training loop does after its first step.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import torch

import maskc
from maskc.registry import get_backend

TARGET_SECONDS = 5.0


def window_pattern(n: int) -> maskc.CompiledPattern:
    spec = maskc.Spec(name="window-512", pattern=maskc.Window(before=256, after=256), block_size=64)
    return maskc.compile(spec, seq_len=n)


def best_of(repeat: int, run: Callable[[], object], before: Callable[[], None] = lambda: None) -> float:
    """Fastest of `repeat` timed runs, each preceded by an untimed `before`."""
    times = []
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss() -> int:
    """The process's peak resident memory so far, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def inputs(n: int, dim: int, grad: bool = False) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 1, n, dim, generator=gen).requires_grad_(grad) for _ in range(3))


def bench_long(n: int, dim: int, repeat: int) -> None:
    backend = get_backend("cpu")
    pattern = window_pattern(n)
    q, k, v = inputs(n, dim)
    pairs = pattern.layouts[0].element_count()
    print(f"n = {n}, H = 1, D = {dim}, float32, window 512 (before 256, after 256): {pairs:,} active pairs")

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return maskc.attention(q, k, v, pattern, backend="cpu")

    rss_before = peak_rss()
    cold = best_of(repeat, forward, before=backend.plans.clear)
    growth = peak_rss() - rss_before
    warm = best_of(repeat, forward)
    verdict = "meets" if cold <= TARGET_SECONDS else "MISSES"
    print(f"  forward, cold (element CSR built): {cold:.2f} s  ({verdict} the {TARGET_SECONDS:.0f} s target)")
    print(
        f"  peak memory growth over the cold runs: {growth / 2**20:.0f} MiB "
        f"(step budget {backend.memory_budget / 2**20:.0f} MiB, plan cache {backend.plans.budget / 2**20:.0f} MiB)"
    )
    print(f"  forward, warm (cached plans, {backend.plans.nbytes / 2**20:.0f} MiB): {warm:.2f} s")

    qg, kg, vg = inputs(n, dim, grad=True)

    def forward_backward() -> None:
        maskc.attention(qg, kg, vg, pattern, backend="cpu").sum().backward()

    both = best_of(repeat, forward_backward)
    print(f"  forward + backward, warm: {both:.2f} s")


def bench_against_dense(n: int, dim: int, repeat: int) -> None:
    pattern = window_pattern(n)
    q, k, v = inputs(n, dim)
    mask = torch.from_numpy(pattern.to_dense())
    get_backend("cpu").plans.clear()
    with torch.no_grad():
        sparse_cold = best_of(1, lambda: maskc.attention(q, k, v, pattern, backend="cpu"))
        sparse = best_of(repeat, lambda: maskc.attention(q, k, v, pattern, backend="cpu"))
        dense = best_of(repeat, lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    print(f"n = {n}, same pattern, against dense masked scaled_dot_product_attention (float32):")
    print(f"  sparse cpu forward: {sparse:.3f} s warm, {sparse_cold:.3f} s cold; dense SDPA: {dense:.3f} s")
    print(f"  dense / sparse: {dense / sparse:.1f}x warm, {dense / sparse_cold:.1f}x cold")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--n-dense", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_long(args.n, args.dim, args.repeat)
    bench_against_dense(args.n_dense, args.dim, args.repeat)


if __name__ == "__main__":
    main()
