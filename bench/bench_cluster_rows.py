"""Cluster order's row permutations: one Triton row copy each (`maskc::permute_rows`) against torch's
gather (MASKC_TRITON_ROW_COPIES=0; its gradient a scatter-add), alternating in one process on one GPU.

Run on a CUDA machine: python3 bench/bench_cluster_rows.py [--n 32768] [--rounds 2]
k-means with √n held centroids and LSH with 64 buckets, causal, bf16, B = 1, H = 16, D = 128. Per
variant: forward and forward+backward (do_bench medians, inputs requiring grad, as bench_runtime.py
times them), the forward under no_grad, and one forward's wall time from a synchronised start to a
synchronised end (host and GPU together); then, with MASKC_BENCH_GRAPHS=1, the row-copy variant replayed
from a CUDA graph (the GPU's work alone). JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import torch
from bench_triton import graph_times, time_fwd_bwd
from triton.testing import do_bench

import maskc
from maskc.errors import MaskcWarning

B, H, D = 1, 16, 128


def _wall_ms(call) -> float:
    """Median of 20 single calls, each from a synchronised start to a synchronised end."""
    times = []
    for _ in range(20):
        torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32768)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, args.n, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    for method, clusters in (("kmeans", round(args.n**0.5)), ("lsh", 64)):
        spec = {"name": method, "causal": True, "pattern": {"cluster": {"clusters": clusters, "method": method}}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MaskcWarning)
            pattern = maskc.compile(maskc.Spec.model_validate(spec), seq_len=args.n, heads=H)
        centroids = None
        if method == "kmeans":
            module = maskc.nn.ClusterCentroids(H, clusters, D).cuda()
            module.update(q.detach(), k.detach())
            centroids = module.centroids

        def ours(a, b, c, pattern=pattern, centroids=centroids):
            return maskc.attention(a, b, c, pattern, backend="triton", centroids=centroids)

        for _ in range(args.rounds):
            for copies in ("1", "0"):
                os.environ["MASKC_TRITON_ROW_COPIES"] = copies
                out = ours(q, k, v)
                out.backward(torch.randn_like(out))
                fwd, fwd_bwd = time_fwd_bwd(ours, q, k, v)
                with torch.no_grad():
                    no_grad = do_bench(lambda: ours(q, k, v), warmup=10, rep=50, return_mode="median")
                    wall = _wall_ms(lambda: ours(q, k, v))
                row = {"case": f"{method} {clusters}", "row_copies": copies == "1", "fwd_ms": round(fwd, 3),
                       "fwdbwd_ms": round(fwd_bwd, 3), "fwd_no_grad_ms": round(no_grad, 3),
                       "fwd_wall_ms": round(wall, 3)}  # fmt: skip
                print(json.dumps(row), flush=True)
        # the GPU's work alone: replayed from a CUDA graph (MASKC_BENCH_GRAPHS=1), row copies on
        os.environ["MASKC_TRITON_ROW_COPIES"] = "1"
        print(json.dumps({"case": f"{method} {clusters}", **graph_times(ours, q, k, v, 1.0)}), flush=True)
    os.environ.pop("MASKC_TRITON_ROW_COPIES", None)


if __name__ == "__main__":
    main()
