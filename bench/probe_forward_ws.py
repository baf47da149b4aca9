"""Probe: a warp-specialised kernel (kernels/forward_ws.py, backward_ws.py) against the tuned Triton one.

For each case (B = 1, H = 16, D = 128, bf16; n = 32768 unless the grid fixes it) times maskc's
forward (or, for dQ or dK/dV, forward+backward) with the tuner's pick among the kernel's Triton
candidates, then with each of its warp-specialised configurations forced, and dense causal cuDNN
once in the same process; prints milliseconds, each variant's ratio to the Triton pick and its
output's (or gradients') relative difference from it. A measurement for bench/NOTES.md; the backend's tuner
makes the same comparison per problem on its own.

    python3 bench/probe_forward_ws.py [--cases window,documents] [--kernel forward|dq|dkdv] [--once]
                                      [--stages 4]

`--stages S` also times every configuration with S stages (ring buffers of key and value tiles, or
of query and dO tiles), those the tuner does not offer: a deeper ring where it fits in shared memory.

`--once`, for a profiler (`bench/run_gpu.sh ncu`): one call per case with the kernel's first
warp-specialised configuration and the other kernels' first candidates, untimed and untuned, so that
each kernel launches once and nothing else runs.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def forced(kernel: str, config: tuning.KernelConfig | None) -> None:
    """Only `config` as `kernel`'s candidate, the other kernels' spaces the tuner's (None: the tuner's
    own space without `kernel`'s warp-specialised candidates)."""
    tuning.forget_configs()
    if config is None:
        tuning.candidates = lambda name, *args: [c for c in ORIGINAL(name, *args) if not (name == kernel and c.ws)]
    else:
        tuning.candidates = lambda name, *args: [config] if name == kernel else ORIGINAL(name, *args)


ORIGINAL = tuning.candidates


def run_case(name: str, kernel: str, once: bool = False, stages: int | None = None) -> None:
    """The case's forward ("forward"), or forward+backward with each dQ ("dq") or dK/dV ("dkdv") candidate
    (`once`: one call with the first warp-specialised one; `stages`: each also with that many stages)."""
    source, documents = CASES[name]
    spec = maskc.Spec(name=name, **source) if isinstance(source, dict) else maskc.load(source)
    n = None if getattr(spec, "grid", None) is not None else N
    pattern = maskc.compile(spec, seq_len=n, heads=H)
    n = pattern.n
    q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn_like(q)
    ids = torch.as_tensor(maskc.ids_from_lengths(LENGTHS), device="cuda")[None] if documents else None

    def call() -> torch.Tensor:
        out = maskc.attention(q, k, v, pattern, backend="triton", documents=ids)
        if kernel == "forward":
            return out.detach()
        q.grad = k.grad = v.grad = None
        out.backward(grad)
        return q.grad if kernel == "dq" else torch.cat([k.grad, v.grad])

    results, reference = {}, None
    if kernel == "forward":
        space = tuning._WS[D] + tuning._WS_HALVES[D]
    else:
        space = tuning._WS_BACKWARD[kernel][D] + tuning._WS_BACKWARD_HALVES[kernel][D]
    if stages is not None:
        space += [dataclasses.replace(c, num_stages=stages) for c in space if c.num_stages != stages]
        space = list(dict.fromkeys(space))
    if once:
        forced(kernel, space[0])
        call()
        torch.cuda.synchronize()
        print(json.dumps({"case": name, "n": n, "ran once": str(space[0])}), flush=True)
        return
    variants = [("triton", None)]
    variants += [
        (f"ws {c.block_m}x{c.block_n} s{c.num_stages} overlap={int(c.overlap)}{' halves' if c.halves else ''}", c)
        for c in space
    ]
    for label, config in variants:
        forced(kernel, config)
        try:
            got = call()
            ms = do_bench(call, warmup=25, rep=100, return_mode="median")
        except Exception as error:  # a variant that fails must not hide the others
            results[label] = f"{type(error).__name__}: {str(error)[:200]}"
            continue
        reference = got if reference is None else reference
        diff = ((got.float() - reference.float()).norm() / reference.float().norm()).item()
        results[label] = {"ms": round(ms, 4), "vs_triton": None, "diff": round(diff, 6)}
        if "triton" in results and isinstance(results["triton"], dict):
            results[label]["vs_triton"] = round(results["triton"]["ms"] / ms, 3)
    print(json.dumps({"case": name, "n": n, "timed": "forward" if kernel == "forward" else "forward+backward",
                      **results}), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument(
        "--kernel",
        choices=["forward", "dq", "dkdv"],
        default="forward",
        help="the kernel whose candidates are timed (dq, dkdv: forward+backward)",
    )
    parser.add_argument("--once", action="store_true", help="one untimed call per case, for a profiler")
    parser.add_argument("--stages", type=int, help="also time every configuration with this many stages")
    args = parser.parse_args()
    if args.once:
        os.environ["MASKC_TRITON_AUTOTUNE"] = "0"  # every kernel's first candidate: no tuning launches
        for name in args.cases.split(","):
            run_case(name, args.kernel, once=True)
        return
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ms = do_bench(
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), warmup=25, rep=100, return_mode="median"
        )
    print(json.dumps({"dense_causal_cudnn_fwd_ms": round(ms, 4), "n": N, "gpu": torch.cuda.get_device_name()}))
    for name in args.cases.split(","):
        run_case(name, args.kernel, stages=args.stages)


if __name__ == "__main__":
    main()
