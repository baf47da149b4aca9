"""Probe: the warp-specialised forward (kernels/forward_ws.py) against the tuned Triton forward.

For each case (B = 1, H = 16, D = 128, bf16; n = 32768 unless the grid fixes it) times maskc's
forward with the tuner's pick among the Triton kernels (MASKC_TRITON_WS=0), then with each
warp-specialised configuration forced (with and without the overlapped walk), and dense causal
cuDNN once in the same process; prints milliseconds, each variant's ratio to the Triton pick and
its output's relative difference from it. A measurement for bench/NOTES.md; the backend's tuner
makes the same comparison per problem on its own.

    python3 bench/probe_forward_ws.py [--cases window,documents]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

import maskc
from maskc.backends.triton import tuning

B, H, D, N = 1, 16, 128, 32768
LENGTHS = [2381, 1211, 2568, 1799, 1174, 5864, 13954, 3817]
CASES = {
    "window": ("specs/mistral_swa.yaml", False),
    "streaming": ("specs/streaming_llm.yaml", False),
    "longformer": ("specs/longformer.yaml", False),
    "bigbird": ("specs/bigbird.yaml", False),
    "documents": ({"causal": True, "pattern": {"document": {}}}, True),
    "documents_window": (
        {"causal": True, "pattern": {"intersect": [{"document": {}}, {"window": {"before": 1023, "after": 0}}]}},
        True,
    ),
    "sta": ("specs/sta_video.yaml", False),
}


def forced(config: tuning.KernelConfig | None) -> None:
    """Only `config` as the forward's candidate (None: the tuner's own space without the kernel)."""
    tuning.forget_configs()
    if config is None:
        os.environ["MASKC_TRITON_WS"] = "0"
        tuning.candidates = ORIGINAL
        return
    os.environ["MASKC_TRITON_WS"] = "1"
    tuning.candidates = lambda kernel, *args: [config] if kernel == "forward" else ORIGINAL(kernel, *args)


ORIGINAL = tuning.candidates


def run_case(name: str) -> None:
    source, documents = CASES[name]
    spec = maskc.Spec(name=name, **source) if isinstance(source, dict) else maskc.load(source)
    n = None if getattr(spec, "grid", None) is not None else N
    pattern = maskc.compile(spec, seq_len=n, heads=H)
    n = pattern.n
    q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ids = torch.as_tensor(maskc.ids_from_lengths(LENGTHS), device="cuda")[None] if documents else None

    def call() -> torch.Tensor:
        return maskc.attention(q, k, v, pattern, backend="triton", documents=ids)

    results, reference = {}, None
    variants = [("triton", None)]
    variants += [(f"ws {c.block_m}x{c.block_n} s{c.num_stages} overlap={int(c.overlap)}", c) for c in tuning._WS[D]]
    for label, config in variants:
        forced(config)
        try:
            out = call()
            ms = do_bench(call, warmup=25, rep=100, return_mode="median")
        except Exception as error:  # a variant that fails must not hide the others
            results[label] = f"{type(error).__name__}: {str(error)[:200]}"
            continue
        reference = out if reference is None else reference
        diff = ((out.float() - reference.float()).norm() / reference.float().norm()).item()
        results[label] = {"ms": round(ms, 4), "vs_triton": None, "out_diff": round(diff, 6)}
        if "triton" in results and isinstance(results["triton"], dict):
            results[label]["vs_triton"] = round(results["triton"]["ms"] / ms, 3)
    print(json.dumps({"case": name, "n": n, **results}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ms = do_bench(
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), warmup=25, rep=100, return_mode="median"
        )
    print(json.dumps({"dense_causal_cudnn_fwd_ms": round(ms, 4), "n": N, "gpu": torch.cuda.get_device_name()}))
    for name in args.cases.split(","):
        run_case(name)


if __name__ == "__main__":
    main()
