"""maskc's Triton backend against FlexAttention and dense SDPA on one GPU, in one process.

Run on a CUDA machine: python3 bench/bench_triton.py [--ns 8192,32768] [--patterns all] [--memory-n 1048576]
[--chunk-factor 2,0] [--tma 0,1] [--compare-launch]
Same method as the FlexAttention anchors (../shared/reference/flex_peer_bench.py): bf16, B = 1,
H = 16, D = 128; FlexAttention compiled with the equivalent mask_mod and its default block mask;
dense causal scaled_dot_product_attention (flash and cuDNN); triton.testing.do_bench medians;
effective TFLOP/s = 4·B·H·D·(active pairs) / forward time, and 3.5 times that over the
forward+backward time. Both sides run the same mask: the active pairs of Flex's mask_mod are
counted on the GPU and must equal maskc's exact count, and the two outputs' relative difference is printed.
Also prints the two floors per pattern (active-pair FLOPs at the measured bf16 matmul rate, and
the stored tile area over the active pairs; bytes at the measured copy bandwidth) and, with
--memory-n, the peak memory of a first forward+backward of the causal 4096 window.
Writes JSON (row by row) to $OUT/bench_triton.json and a markdown table to bench_triton.md when OUT is set.
MASKC_BENCH_PROFILE=1 also prints one profiled forward+backward of each maskc variant (report.profile_step).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import triton
from report import markdown_table, profile_fwd_bwd, save_rows, tuner_picks
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from triton.testing import do_bench, do_bench_cudagraph

import maskc
from maskc.backends.triton import tables
from maskc.backends.triton.tuning import forget_configs
from maskc.errors import MaskcWarning

SPECS = Path(__file__).resolve().parent.parent / "specs"
B, H, D = 1, 16, 128
DTYPE = torch.bfloat16
ROWS: list[dict[str, Any]] = []
#: Also time every call replayed from a CUDA graph (`graph_times`): MASKC_BENCH_GRAPHS=1 (run_gpu.sh's
#: "graphs" phase sets it; off by default, since a failed capture ends what the process can measure).
GRAPHS = os.environ.get("MASKC_BENCH_GRAPHS", "0") == "1"
#: Set by a failed capture: CUDA's random generator is then unusable in this process, so no more captures.
_CAPTURE_FAILED: list[str] = []


#: The file under $OUT that `log` keeps the rows in, each time (a run cut by its time limit keeps its
#: rows); bench_lowering.py names its own.
JSON_FILE = {"name": "bench_triton.json"}


def log(**row: Any) -> None:
    ROWS.append(row)
    print(json.dumps(row), flush=True)
    save_rows(JSON_FILE["name"], ROWS)


def matmul_tflops() -> float:
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=DTYPE) for _ in range(2))
    ms = do_bench(lambda: a @ b, warmup=50, rep=300, return_mode="median")
    return 2 * 8192**3 / (ms * 1e-3) / 1e12


def copy_bandwidth() -> float:
    """Bytes read plus written per second by a 4 GiB device-to-device copy, in TB/s."""
    src = torch.empty(1 << 31, device="cuda", dtype=torch.int16)
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=20, rep=100, return_mode="median")
    return 2 * src.numel() * 2 / (ms * 1e-3) / 1e12


def mask_mods(n: int, bigbird: maskc.CompiledPattern) -> dict[str, Callable]:
    """FlexAttention mask_mods of the benchmark patterns (BigBird's from maskc's 64-block layout)."""
    layout = bigbird.layouts[0]
    assert layout.full.all(), "BigBird on 64 × 64 tiles must be all full tiles"
    blocks = torch.zeros(layout.grid.row_tiles, layout.grid.col_tiles, dtype=torch.bool)
    blocks[torch.as_tensor(layout.tile_rows()), torch.as_tensor(layout.col_idx.astype("int64"))] = True
    blocks = blocks.cuda()
    return {
        "mistral_swa": lambda b, h, qi, ki: (qi >= ki) & (qi - ki < 4096),
        "longformer": lambda b, h, qi, ki: ((qi - ki).abs() <= 256) | (qi == 0) | (ki == 0),
        "bigbird": lambda b, h, qi, ki: blocks[qi // 64, ki // 64],
        "sparse_transformer_strided": lambda b, h, qi, ki: (qi >= ki) & ((qi - ki <= 128) | ((qi - ki) % 128 == 0)),
        "sparse_transformer_fixed": lambda b, h, qi, ki: (qi >= ki) & ((qi // 128 == ki // 128) | (ki % 128 >= 120)),
    }


def count_pairs(mask_mod: Callable, n: int) -> int:
    """Active pairs of a mask_mod, evaluated on the GPU in row chunks."""
    total, keys = 0, torch.arange(n, device="cuda")[None, :]
    for lo in range(0, n, 1024):
        rows = torch.arange(lo, min(lo + 1024, n), device="cuda")[:, None]
        total += int(mask_mod(0, 0, rows, keys).sum())
    return total


def time_fwd_bwd(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[float, float]:
    """Median forward and forward+backward milliseconds, as the anchors measure them."""
    fwd = do_bench(lambda: fn(q, k, v), warmup=25, rep=100, return_mode="median")
    g = torch.randn_like(fn(q, k, v))

    def fwd_bwd() -> None:
        q.grad = k.grad = v.grad = None
        fn(q, k, v).backward(g)

    return fwd, do_bench(fwd_bwd, warmup=10, rep=50, return_mode="median")


def graph_times(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pairs: float) -> dict[str, Any]:
    """Median forward and forward+backward ms of `fn` replayed from a CUDA graph (do_bench_cudagraph):
    the GPU's time with no host time in it, as a captured training step (torch.compile's
    "reduce-overhead" mode, torch.cuda.make_graphed_callables) runs the call. Unlike do_bench, the L2
    cache is not flushed between calls. With TFLOP/s of `pairs` active pairs (per batch element and
    head, also logged as `graph_pairs`); {"graph_error": …} when the call cannot be captured.

    A failed capture leaves CUDA's random generator unusable in the process (torch then refuses any
    random draw on the GPU): later calls here return the error at once, and the benchmark's own later
    draws fail, so `run_gpu.sh graphs` runs one case per process."""
    if not GRAPHS:
        return {}
    if _CAPTURE_FAILED:
        return {"graph_error": f"not captured: an earlier capture failed in this process ({_CAPTURE_FAILED[0]})"}
    # fresh leaves: a leaf's gradient accumulator made by earlier eager steps (and kept alive by any
    # output still referenced) would accumulate on the default stream, which a capture refuses
    q, k, v = (x.detach().clone().requires_grad_(x.requires_grad) for x in (q, k, v))
    g = torch.randn_like(fn(q, k, v))
    try:
        fwd = do_bench_cudagraph(lambda: fn(q, k, v), rep=100, return_mode="median")
        fwd_bwd = do_bench_cudagraph(lambda: fn(q, k, v).backward(g), rep=100, grad_to_none=[q, k, v],
                                     return_mode="median")  # fmt: skip
    except Exception as error:  # a call that cannot be captured is reported, not fatal
        traceback.print_exception(error)
        _CAPTURE_FAILED.append(type(error).__name__)
        return {"graph_error": _capture_error(error)}
    return {"graph_pairs": pairs, **{f"graph_{key}": value for key, value in rates(pairs, fwd, fwd_bwd).items()}}


def graph_efficiency(graphed: dict[str, Any], dense: dict[str, Any]) -> dict[str, float]:
    """{"graph_fwd_eff", "graph_fwdbwd_eff"}: pairs per graphed ms over dense cuDNN's of the same run
    (both `graph_times` results, pairs per batch element and head); {} when either was not captured."""
    keys = ("graph_pairs", "graph_fwd_ms", "graph_fwdbwd_ms")
    if not all(key in graphed and key in dense for key in keys):
        return {}
    share = graphed["graph_pairs"] / dense["graph_pairs"]
    return {
        f"graph_{step}_eff": round(share * dense[f"graph_{step}_ms"] / graphed[f"graph_{step}_ms"], 3)
        for step in ("fwd", "fwdbwd")
    }


def _capture_error(error: BaseException) -> str:
    """The error to report: a capture that ended invalidated is named with the error that broke it
    (the context its end was raised in), any other error as it is."""
    text = f"{type(error).__name__}: {str(error)[:300]}"
    cause = error.__context__
    if "during capture" not in str(error) or cause is None:
        return text
    return f"{type(cause).__name__}: {str(cause)[:300]} (then {text[:120]})"


def first_call_and_times(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[float, float, float]:
    """(seconds of a first forward+backward, compiles and tuning included; then `time_fwd_bwd`'s medians)."""
    start = time.perf_counter()
    out = fn(q, k, v)
    out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    return (first, *time_fwd_bwd(fn, q, k, v))


@contextlib.contextmanager
def triton_launches() -> Iterator[None]:
    """Every kernel launched through Triton's own launch path within (MASKC_FAST_LAUNCH=0:
    backends/triton/launching.py's memory off), the variable's earlier value restored after."""
    earlier = os.environ.get("MASKC_FAST_LAUNCH")
    os.environ["MASKC_FAST_LAUNCH"] = "0"
    try:
        yield
    finally:
        if earlier is None:
            os.environ.pop("MASKC_FAST_LAUNCH")
        else:
            os.environ["MASKC_FAST_LAUNCH"] = earlier


def triton_launch_times(fn: Callable, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> dict[str, float]:
    """`time_fwd_bwd`'s medians with Triton's own launches (`triton_launches`), the same compiled
    kernels and picks."""
    with triton_launches():
        fwd, fwd_bwd = time_fwd_bwd(fn, q, k, v)
    return {"triton_launch_fwd_ms": round(fwd, 3), "triton_launch_fwdbwd_ms": round(fwd_bwd, 3)}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def compile_spec(name: str, n: int, block_size: int | None = None) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(SPECS / f"{name}.yaml", seq_len=n, heads=H, block_size=block_size)


def rates(pairs: int, fwd: float, fwd_bwd: float) -> dict[str, float]:
    flops = 4 * B * H * D * pairs
    return {
        "fwd_ms": round(fwd, 3),
        "fwdbwd_ms": round(fwd_bwd, 3),
        "fwd_tflops": round(flops / fwd / 1e9, 1),
        "fwdbwd_tflops": round(3.5 * flops / fwd_bwd / 1e9, 1),
    }


def floors(pattern: maskc.CompiledPattern, n: int, peak: float, bandwidth: float) -> dict[str, float]:
    """Lower bounds in ms: active-pair FLOPs at the measured matmul rate (and the stored-tile area
    over the active pairs, what a block-sparse kernel computes on the spec's tiles); bytes with
    each tensor read or written once (forward: q, k, v, out; backward adds q, k, v, out, dout
    read and dq, dk, dv written) at the measured copy bandwidth."""
    stats = pattern.stats()
    flop_ms = 4 * B * H * D * stats.active_pairs / (peak * 1e12) * 1e3
    tensor = B * H * n * D * 2
    return {
        "floor_fwd_flop_ms": round(flop_ms, 3),
        "floor_fwdbwd_flop_ms": round(3.5 * flop_ms, 3),
        "tile_area_over_pairs": round(stats.tile_density / stats.element_density, 3),
        "floor_fwd_byte_ms": round(4 * tensor / (bandwidth * 1e12) * 1e3, 3),
        "floor_fwdbwd_byte_ms": round(12 * tensor / (bandwidth * 1e12) * 1e3, 3),
    }


def bench_dense(n: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    pairs = n * (n + 1) // 2
    for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel(backend):
                fwd, fwd_bwd = time_fwd_bwd(
                    lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v
                )
                graphed = graph_times(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k,
                                      v, pairs)  # fmt: skip
            log(n=n, impl=name, pattern="dense_causal", **rates(pairs, fwd, fwd_bwd), **graphed)
        except Exception as error:  # a missing SDPA backend is reported, not fatal
            log(n=n, impl=name, pattern="dense_causal", error=str(error)[:200])


def bench_pattern(name: str, mask_mod: Callable, n: int, q, k, v, peak: float, bandwidth: float,
                  chunk_factors: list[float], tma: list[str], compare_launch: bool = False) -> None:  # fmt: skip
    pattern = compile_spec(name, n)
    pairs = int(pattern.stats().active_pairs)
    flex_pairs = count_pairs(mask_mod, n)
    if flex_pairs != pairs:
        log(n=n, pattern=name, error=f"mask mismatch: maskc {pairs} pairs, flex mask_mod {flex_pairs}")
        return
    common = {"n": n, "pattern": name, "density": round(pairs / n / n, 5), **floors(pattern, n, peak, bandwidth)}

    def ours(a, b, c):
        return maskc.attention(a, b, c, pattern, backend="triton")

    # each variant in this process, beside the same Flex and cuDNN figures; the TMA setting restored after
    setting = os.environ.get("MASKC_TRITON_TMA")
    for factor, tma_setting in ((f, t) for f in chunk_factors for t in tma):
        tables.CHUNK_FACTOR = factor
        os.environ["MASKC_TRITON_TMA"] = tma_setting
        forget_configs()
        first, fwd, fwd_bwd = first_call_and_times(ours, q, k, v)
        tuned, timed = tuner_picks(pattern.spec_hash, n)
        slow = triton_launch_times(ours, q, k, v) if compare_launch else {}
        impl = " ".join(
            ["maskc"]
            + ([f"chunks {factor:g}"] if len(chunk_factors) > 1 else [])
            + ([f"tma {tma_setting}"] if len(tma) > 1 else [])
        )
        log(impl=impl, first_call_s=round(first, 1), configs=tuned, tuning=timed, **common,
            **rates(pairs, fwd, fwd_bwd), **slow, **graph_times(ours, q, k, v, pairs))  # fmt: skip
        profile_fwd_bwd(ours, q, k, v, f"{name}, {impl}")
    if setting is None:
        os.environ.pop("MASKC_TRITON_TMA", None)
    else:
        os.environ["MASKC_TRITON_TMA"] = setting

    # Each pattern's mask_mod is new code to torch.compile; without a reset, the recompile limit
    # would silently send later patterns to eager flex_attention (dense scores, not FlexAttention).
    torch._dynamo.reset()
    start = time.perf_counter()
    block_mask = create_block_mask(mask_mod, None, None, n, n, device="cuda", _compile=True)
    flex = torch.compile(flex_attention, dynamic=False)

    def theirs(a, b, c):
        return flex(a, b, c, block_mask=block_mask)

    reference = theirs(q, k, v)
    reference.backward(torch.randn_like(reference))
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    agreement = relative(ours(q, k, v), reference)
    fwd, fwd_bwd = time_fwd_bwd(theirs, q, k, v)
    log(
        impl="flex",
        first_call_s=round(first, 1),
        out_vs_maskc=round(agreement, 5),
        **common,
        **rates(pairs, fwd, fwd_bwd),
        **graph_times(theirs, q, k, v, pairs),
    )


def bench_memory(n: int) -> None:
    """Forward+backward of the causal 4096 window at n tokens: time and peak memory."""
    pattern = compile_spec("mistral_swa", n)
    q, k, v = (torch.randn(1, H, n, D, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = maskc.attention(q, k, v, pattern, backend="triton")
    out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    inputs = 3 * q.numel() * q.element_size()
    log(
        n=n,
        impl="maskc",
        pattern="mistral_swa_memory",
        first_call_s=round(time.perf_counter() - start, 2),
        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
        inputs_gib=round(inputs / 2**30, 2),
        finite=bool(torch.isfinite(out).all() and torch.isfinite(q.grad).all()),
    )


def table() -> str:
    """The measured rows as a markdown table, with ratios to Flex and dense cuDNN of the same run."""
    header = ["n", "pattern", "impl", "fwd ms", "fwd TFLOP/s", "fwd+bwd ms", "fwd+bwd TFLOP/s", "fwd vs flex",
              "fwd+bwd vs flex", "graph fwd / fwd+bwd TFLOP/s"]  # fmt: skip
    rows = []
    for row in (r for r in ROWS if "fwd_ms" in r):
        flex = next(
            (r for r in ROWS if r.get("impl") == "flex" and r.get("n") == row["n"]
             and r.get("pattern") == row["pattern"] and "fwd_ms" in r),
            None,
        )  # fmt: skip
        ratio = ("", "") if flex is None else tuple(
            f"{flex[key] / row[key]:.2f}x" for key in ("fwd_ms", "fwdbwd_ms")
        )  # fmt: skip
        graphed = f"{row['graph_fwd_tflops']} / {row['graph_fwdbwd_tflops']}" if "graph_fwd_tflops" in row else ""
        rows.append([row["n"], row["pattern"], row["impl"], row["fwd_ms"], row["fwd_tflops"], row["fwdbwd_ms"],
                     row["fwdbwd_tflops"], *ratio, graphed])  # fmt: skip
    return markdown_table(header, rows)


def chunk_factors(parser: argparse.ArgumentParser, text: str) -> list[float]:
    """--chunk-factor's values: numbers ≥ 0, at least one."""
    try:
        factors = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--chunk-factor takes numbers separated by commas, got {text!r}")
    if not factors or any(f < 0 for f in factors):
        parser.error(f"--chunk-factor takes numbers ≥ 0, got {text!r}")
    return factors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="8192,32768", help="comma-separated sequence lengths")
    parser.add_argument("--patterns", default="all", help="comma-separated spec names, or all")
    parser.add_argument("--memory-n", type=int, default=0, help="also run the memory check at this n")
    parser.add_argument("--chunk-factor", default=f"{tables.CHUNK_FACTOR:g}",
                        help="long lines run as chunks of this many median lines; 0 runs them whole; "
                             "several (comma-separated) are each timed in this process")  # fmt: skip
    parser.add_argument("--tma", default=os.environ.get("MASKC_TRITON_TMA", "1"),
                        help="MASKC_TRITON_TMA values to time in this process (0: no tensor-descriptor "
                             "candidates, 1: the tuner may pick them), comma-separated")  # fmt: skip
    parser.add_argument(
        "--compare-launch",
        action="store_true",
        help="also time maskc with Triton's own kernel launches (MASKC_FAST_LAUNCH=0)",
    )
    args = parser.parse_args()
    factors = chunk_factors(parser, args.chunk_factor)
    tma = [x.strip() for x in args.tma.split(",") if x.strip()]
    if not tma or any(x not in ("0", "1") for x in tma):
        parser.error(f"--tma takes 0 and 1, comma-separated, got {args.tma!r}")
    torch.backends.cuda.matmul.allow_tf32 = True
    log(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__, chunk_factors=factors)
    peak, bandwidth = matmul_tflops(), copy_bandwidth()
    log(peak_bf16_matmul_tflops=round(peak, 1), copy_tb_per_s=round(bandwidth, 2))
    if args.memory_n:
        bench_memory(args.memory_n)
        torch.cuda.empty_cache()
    for n in (int(x) for x in args.ns.split(",") if x):
        q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3))
        bench_dense(n, q, k, v)
        mods = mask_mods(n, compile_spec("bigbird", n, block_size=64))
        names = list(mods) if args.patterns == "all" else args.patterns.split(",")
        for name in names:
            try:
                bench_pattern(name, mods[name], n, q, k, v, peak, bandwidth, factors, tma, args.compare_launch)
            except Exception as error:  # one failing pattern must not hide the others
                log(n=n, pattern=name, error=f"{type(error).__name__}: {str(error)[:300]}")
        del q, k, v
        torch.cuda.empty_cache()
    print(table())
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_triton.md").write_text(table() + "\n")


if __name__ == "__main__":
    main()
