"""Decoding over a KV cache sized by the spec, against dense SDPA, on a CUDA GPU.

Run on a CUDA machine: python3 bench/bench_decode.py
Two measurements, bf16, GQA 32 query heads / 8 KV heads, head dim 128:

1. One sequence (B = 1) at context 131072 with a causal window of 4096 + 4 sinks: one decoding
   step over the maskc.KVCache (which holds 4100 slots) against scaled_dot_product_attention over
   a 4100-token cache (the floor: reading the window) and over the whole 131072-token context.
2. Batched decoding: B = 64 sequences of different lengths (each decodes at its own position),
   the same window spec; the bytes of K and V read per step over the step's time, against the
   copy bandwidth of the same bytes (torch copy: read + write).

Device times come from CUDA graphs (triton.testing.do_bench_cudagraph), so the host's launch
overhead is left out on every side; the end-to-end KVCache.attention call (host work included)
is timed with do_bench and printed too. Writes JSON to $OUT/bench_decode.json when OUT is set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from triton.testing import do_bench, do_bench_cudagraph

import maskc
from maskc.backends.triton.function import decode_step

DTYPE = torch.bfloat16
H, HKV, D = 32, 8, 128
WINDOW, SINKS = 4096, 4
CONTEXT = 131072
BATCH = 64


def window_pattern(n: int) -> maskc.CompiledPattern:
    spec = maskc.Spec(
        name="swa-4096-sinks-4",
        causal=True,
        pattern=[maskc.Sink(count=SINKS), maskc.Window(before=WINDOW - 1, after=0)],
    )
    return maskc.compile(spec, seq_len=n)


def filled_cache(pattern: maskc.CompiledPattern, lengths: list[int]) -> maskc.KVCache:
    """A cache after prefill of each sequence's first lengths[b] tokens (random keys and values)."""
    cache = maskc.KVCache(pattern, batch=len(lengths), kv_heads=HKV, head_dim=D, dtype=DTYPE, device="cuda")
    chunk = 8192
    for start in range(0, max(lengths), chunk):
        counts = [max(0, min(chunk, n - start)) for n in lengths]
        k = torch.randn(len(lengths), HKV, chunk, D, device="cuda", dtype=DTYPE)
        cache.append(k, torch.randn_like(k), counts=counts)
    return cache


def step_function(cache: maskc.KVCache, q: torch.Tensor):
    """One decoding step with every index tensor prepared on the GPU (capturable in a CUDA graph)."""
    q_positions = torch.as_tensor(cache.lengths - 1, dtype=torch.int32, device="cuda")
    counts = None if cache.rolling else torch.as_tensor(cache.lengths, dtype=torch.int32, device="cuda")
    scale = D**-0.5

    def step() -> torch.Tensor:
        return decode_step(q, cache.k, cache.v, cache.positions, q_positions, cache.pattern, scale=scale,
                           slot_counts=counts)[0]  # fmt: skip

    return step


def check(cache: maskc.KVCache, q: torch.Tensor, step) -> float:
    """Relative error of the step against SDPA over the retained keys, in position order, for sequence 0."""
    order = torch.argsort(cache.positions[0])
    keep = order[cache.positions[0, order] >= 0]
    k, v = cache.k[:1, :, keep], cache.v[:1, :, keep]
    want = F.scaled_dot_product_attention(q[:1].float(), k.float(), v.float(), enable_gqa=True)
    got = step()[:1].float()
    return ((got - want).norm() / want.norm()).item()


def single_sequence() -> dict:
    pattern = window_pattern(CONTEXT)
    cache = filled_cache(pattern, [CONTEXT])
    q = torch.randn(1, H, 1, D, device="cuda", dtype=DTYPE)
    step = step_function(cache, q)
    error = check(cache, q, step)
    k_window = torch.randn(1, HKV, WINDOW + SINKS, D, device="cuda", dtype=DTYPE)
    k_full = torch.randn(1, HKV, CONTEXT, D, device="cuda", dtype=DTYPE)

    def sdpa(k: torch.Tensor):
        return lambda: F.scaled_dot_product_attention(q, k, k, enable_gqa=True)

    maskc_us = 1e3 * do_bench_cudagraph(step, rep=200)
    window_us = 1e3 * do_bench_cudagraph(sdpa(k_window), rep=200)
    full_us = 1e3 * do_bench_cudagraph(sdpa(k_full), rep=200)
    end_to_end_us = 1e3 * do_bench(lambda: cache.attention(q), warmup=25, rep=200, return_mode="median")
    return {
        "context": CONTEXT,
        "cache_slots": cache.slots,
        "cache_bytes": cache.nbytes(),
        "relative_error_vs_sdpa_on_retained_keys": error,
        "maskc_decode_us": maskc_us,
        "sdpa_4100_us": window_us,
        "sdpa_131072_us": full_us,
        "maskc_over_sdpa_4100": maskc_us / window_us,
        "maskc_KVCache_attention_end_to_end_us": end_to_end_us,
    }


def batched(name: str, pattern: maskc.CompiledPattern, lengths: list[int]) -> dict:
    cache = filled_cache(pattern, lengths)
    q = torch.randn(len(lengths), H, 1, D, device="cuda", dtype=DTYPE)
    step = step_function(cache, q)
    error = check(cache, q, step)
    slots_read = [cache.slots] * len(lengths) if cache.rolling else lengths
    kv_bytes = sum(slots_read) * HKV * D * 2 * DTYPE.itemsize
    us = 1e3 * do_bench_cudagraph(step, rep=200)
    source = torch.empty(kv_bytes // 2, dtype=torch.int16, device="cuda")
    target = torch.empty_like(source)
    copy_us = 1e3 * do_bench_cudagraph(lambda: target.copy_(source), rep=200)
    read_gbps = kv_bytes / us / 1e3
    copy_gbps = 2 * kv_bytes / copy_us / 1e3
    return {
        "spec": name,
        "batch": len(lengths),
        "lengths_min_max": [min(lengths), max(lengths)],
        "relative_error_vs_sdpa_on_retained_keys": error,
        "kv_bytes_read": kv_bytes,
        "maskc_decode_us": us,
        "kv_read_GBps": read_gbps,
        "copy_GBps": copy_gbps,
        "fraction_of_copy_bandwidth": read_gbps / copy_gbps,
    }


def main() -> None:
    torch.manual_seed(0)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "single": single_sequence()}
    print(json.dumps(results["single"], indent=2))
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(WINDOW + SINKS, 32768, (BATCH,), generator=generator).tolist()
    results["batched_window"] = batched("window 4096 + 4 sinks", window_pattern(32768), lengths)
    print(json.dumps(results["batched_window"], indent=2))
    short = torch.randint(1024, 8192, (BATCH,), generator=generator).tolist()
    dense = maskc.compile(maskc.Spec(name="dense-causal", causal=True, pattern=maskc.Dense()), seq_len=8192)
    results["batched_dense"] = batched("dense causal", dense, short)
    print(json.dumps(results["batched_dense"], indent=2))
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_decode.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
