"""Probe: does Triton's warp specialisation speed up a band's walk of full tiles on this GPU?

maskc's forward walks each row's tiles from an index list (the next tile's start is loaded in the
loop), which Triton's warp-specialisation pass does not take. A row whose full tiles are one
contiguous run could walk them as a plain range. This probe times that form for a causal sliding
window of 4096 (n = 32768, B = 1, H = 16, D = 128, bf16): the same kernel with and without
`tl.range(..., warp_specialize=True)` over the full tiles (the two partial tiles per row masked after
it), against maskc's forward and dense causal cuDNN in the same process, and checks that the probe
computes maskc's output. A measurement for bench/NOTES.md, not a backend path.

    python3 bench/probe_warp_specialize.py
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench
from triton.tools.tensor_descriptor import TensorDescriptor

import maskc

B, H, N, D, WINDOW, BLOCK = 1, 16, 32768, 128, 4096, 128


@triton.jit
def band_tile(
    acc, m_i, l_i, q, k, v, offs_m, start_n, qk_scale, MASKED: tl.constexpr, WINDOW: tl.constexpr, BLOCK_N: tl.constexpr
):
    qk = tl.dot(q, tl.trans(k))
    if MASKED:
        offs_n = start_n + tl.arange(0, BLOCK_N)
        keep = (offs_n[None, :] <= offs_m[:, None]) & (offs_m[:, None] - offs_n[None, :] < WINDOW)
        qk = tl.where(keep, qk, float("-inf"))
    m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    p = tl.math.exp2(qk * qk_scale - m_ij[:, None])
    alpha = tl.math.exp2(m_i - m_ij)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_ij, l_i


@triton.jit
def band_forward(
    QDesc,
    KDesc,
    VDesc,
    ODesc,
    n,
    qk_scale,
    WINDOW: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    WS: tl.constexpr,
):
    # Stage 1: the program's query tile (rows start_m … of head bh), longest rows first.
    rows = n // BLOCK_M
    pid = tl.program_id(0)
    bh = pid // rows
    start_m = (rows - 1 - pid % rows) * BLOCK_M
    base = bh * n
    offs_m = start_m + tl.arange(0, BLOCK_M)
    q = QDesc.load([base + start_m, 0])
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # Stage 2: the full tiles, one contiguous run: a plain range the warp-specialisation pass can take.
    lo = tl.maximum(start_m - WINDOW + BLOCK_N, 0)
    for start_n in tl.range(lo, start_m, BLOCK_N, warp_specialize=WS):
        k = KDesc.load([base + start_n, 0])
        v = VDesc.load([base + start_n, 0])
        acc, m_i, l_i = band_tile(acc, m_i, l_i, q, k, v, offs_m, start_n, qk_scale, False, WINDOW, BLOCK_N)
    # Stage 3: the partial tiles: the diagonal and the window's left edge.
    k = KDesc.load([base + start_m, 0])
    v = VDesc.load([base + start_m, 0])
    acc, m_i, l_i = band_tile(acc, m_i, l_i, q, k, v, offs_m, start_m, qk_scale, True, WINDOW, BLOCK_N)
    edge = start_m - WINDOW
    if edge >= 0:
        k = KDesc.load([base + edge, 0])
        v = VDesc.load([base + edge, 0])
        acc, m_i, l_i = band_tile(acc, m_i, l_i, q, k, v, offs_m, edge, qk_scale, True, WINDOW, BLOCK_N)
    ODesc.store([base + start_m, 0], (acc / l_i[:, None]).to(ODesc.dtype))


def probe(q, k, v, ws: bool, warps: int, stages: int) -> tuple[torch.Tensor, float]:
    flat = [x.reshape(B * H * N, D) for x in (q, k, v)]
    out = torch.empty_like(flat[0])
    descs = [TensorDescriptor.from_tensor(x, [BLOCK, D]) for x in (*flat, out)]

    def run() -> None:
        band_forward[(B * H * N // BLOCK,)](
            *descs, N, D**-0.5 * 1.4426950408889634,
            WINDOW=WINDOW, BLOCK_M=BLOCK, BLOCK_N=BLOCK, HEAD_DIM=D, WS=ws, num_warps=warps, num_stages=stages,
        )  # fmt: skip

    run()
    return out.reshape(B, H, N, D), do_bench(run, warmup=25, rep=200, return_mode="median")


def main() -> None:
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        dense = do_bench(
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), warmup=25, rep=200, return_mode="median"
        )
    spec = maskc.Spec(name="window", causal=True, pattern={"window": {"before": WINDOW - 1, "after": 0}})
    pattern = maskc.compile(spec, seq_len=N, heads=H)
    ours = maskc.attention(q, k, v, pattern, backend="triton")
    maskc_ms = do_bench(
        lambda: maskc.attention(q, k, v, pattern, backend="triton"), warmup=25, rep=200, return_mode="median"
    )
    pairs = H * sum(min(i + 1, WINDOW) for i in range(N))
    dense_pairs = H * N * (N + 1) // 2

    def row(name: str, ms: float, **extra) -> None:
        efficiency = (pairs / ms) / (dense_pairs / dense)
        print(
            json.dumps({"case": name, "fwd_ms": round(ms, 4), "efficiency": round(efficiency, 4), **extra}), flush=True
        )

    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "triton": triton.__version__,
                "dense_causal_cudnn_ms": round(dense, 4),
            }
        ),
        flush=True,
    )
    row("maskc forward (tuned)", maskc_ms)
    for ws, warps, stages in [(False, 8, 3), (True, 8, 3), (False, 8, 2)]:
        try:
            out, ms = probe(q, k, v, ws, warps, stages)
        except Exception as err:  # a variant Triton cannot compile here is a result too
            print(
                json.dumps(
                    {
                        "case": f"probe ws={ws} warps={warps} stages={stages}",
                        "error": f"{type(err).__name__}: {str(err)[:300]}",
                    }
                ),
                flush=True,
            )
            continue
        error = ((out.float() - ours.float()).norm() / ours.float().norm()).item()
        row(f"probe ws={ws} warps={warps} stages={stages}", ms, relative_to_maskc=round(error, 5))


if __name__ == "__main__":
    main()
