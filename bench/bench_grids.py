"""Grid patterns (issue 19): NATTEN 2-D and 3-D and STA 3-D on maskc's Triton backend, against dense
non-causal cuDNN attention and FlexAttention with the same mask, in one process on one GPU.

Run on a CUDA machine: python3 bench/bench_grids.py [--cases all] [--block-size 64]
Method (as ../shared/reference/peer_bench_nd.py measured the peers): bf16, B = 1, H = 16, D = 128;
triton.testing.do_bench medians; efficiency = (4·B·H·D·active pairs / time) / (4·B·H·D·n² / dense
time), forward and forward+backward (3.5 × the forward FLOPs over both). FlexAttention runs a
mask_mod written here from the definitions (NATTEN's clamped centres, STA's tile borders), in the
same storage order; its active pairs are counted on the GPU and must equal maskc's exact count.

maskc runs each case with `--schedule` (default auto: the tiled-order pass of maskc.schedule.tiled
where the cost model predicts it cheaper; single: the plain layout in storage order).

Without a GPU, `--cpu` prints, for each case in row-major and tiled orders, the kernel work (pairs
computed, masked ones included, summed over passes) of the single pass in storage order and of the
auto schedule, the active pairs, and their ratio (the tile efficiency).
Writes JSON to $OUT/bench_grids.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from report import save_rows

import maskc
from maskc.errors import MaskcWarning

B, H, D = 1, 16, 128
ROWS: list[dict[str, Any]] = []


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, ...]
    kind: str  # "neighborhood" or "tiles"
    kernel: tuple[int, ...]
    #: STA's tile (tiles only).
    tile: tuple[int, ...] = ()
    #: Storage tiles (None: row-major).
    order: tuple[int, ...] | None = None

    def spec(self) -> maskc.Spec:
        params: dict[str, Any] = {"kernel": list(self.kernel)}
        if self.kind == "tiles":
            params["tile"] = list(self.tile)
        grid: dict[str, Any] = {"shape": list(self.shape)}
        if self.order is not None:
            grid["order"] = {"tiles": list(self.order)}
        return maskc.Spec(name=self.name, grid=grid, pattern={self.kind: params})


CASES = [
    Case("natten2d 128x128 k13", (128, 128), "neighborhood", (13, 13)),
    Case("natten2d 128x128 k13, tiles 8x8", (128, 128), "neighborhood", (13, 13), order=(8, 8)),
    Case("natten2d 128x128 k13, tiles 16x8", (128, 128), "neighborhood", (13, 13), order=(16, 8)),
    Case("sta3d 24x48x48 k12x24x24 t4x8x8", (24, 48, 48), "tiles", (12, 24, 24), (4, 8, 8), (4, 8, 8)),
    Case("sta3d 24x48x48 k12x24x24 t4x8x8, row-major", (24, 48, 48), "tiles", (12, 24, 24), (4, 8, 8)),
    Case("natten3d 16x32x32 k7", (16, 32, 32), "neighborhood", (7, 7, 7)),
    Case("natten3d 16x32x32 k7, tiles 4x4x8", (16, 32, 32), "neighborhood", (7, 7, 7), order=(4, 4, 8)),
    Case("natten3d 16x32x32 k7, tiles 2x8x8", (16, 32, 32), "neighborhood", (7, 7, 7), order=(2, 8, 8)),
]


def log(**row: Any) -> None:
    ROWS.append(row)
    print(json.dumps(row), flush=True)
    save_rows("bench_grids.json", ROWS)


def compiled(case: Case, block_size: int | tuple[int, int], schedule: str = "single") -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(case.spec(), heads=H, block_size=block_size, schedule=schedule)


def schedule_work(pattern: maskc.CompiledPattern) -> dict[str, Any]:
    """Kernel work of the pattern's schedule (pairs computed over all passes) and its passes."""
    from maskc.schedule import schedule_of

    schedule = schedule_of(pattern)[0]
    return {"kernel_work": schedule.kernel_work(), "passes": [p.label for p in schedule.passes]}


def tile_efficiency(pattern: maskc.CompiledPattern) -> dict[str, Any]:
    """Active pairs over the stored tile area (the work of a plain block-sparse kernel), and tiles."""
    stats = pattern.stats()
    layout = pattern.layouts[0]
    return {
        "pairs": int(stats.active_pairs),
        "density": round(stats.element_density, 5),
        "tile_efficiency": round(stats.element_density / stats.tile_density, 3),
        "stored_tiles": layout.nnz,
        "full_tiles": layout.full_count,
    }


# ----------------------------------------------------------------------------- GPU


def coordinates(case: Case, idx: Any) -> list[Any]:
    """Grid coordinates of storage positions (tensors), row-major or tile by tile."""
    shape, order = case.shape, case.order
    if order is None:
        out, rest = [], idx
        for axis in range(len(shape)):
            stride = 1
            for size in shape[axis + 1 :]:
                stride *= size
            out.append(rest // stride % shape[axis])
        return out
    volume = 1
    for t in order:
        volume *= t
    counts = [s // t for s, t in zip(shape, order)]
    tile, inner = idx // volume, idx % volume
    out = []
    for axis in range(len(shape)):
        outer_stride = inner_stride = 1
        for c in counts[axis + 1 :]:
            outer_stride *= c
        for t in order[axis + 1 :]:
            inner_stride *= t
        out.append(tile // outer_stride % counts[axis] * order[axis] + inner // inner_stride % order[axis])
    return out


def mask_mod(case: Case) -> Callable:
    """FlexAttention mask_mod from the definitions: NATTEN as attention-gym's natten.py, STA as its sta.py."""

    def natten(b: Any, h: Any, qi: Any, ki: Any) -> Any:
        holds = None
        for q, k, size, kernel in zip(coordinates(case, qi), coordinates(case, ki), case.shape, case.kernel):
            centre = q.clamp(kernel // 2, (size - 1) - kernel // 2)
            axis = (centre - k).abs() <= kernel // 2
            holds = axis if holds is None else holds & axis
        return holds

    def sta(b: Any, h: Any, qi: Any, ki: Any) -> Any:
        holds = None
        for q, k, size, kernel, tile in zip(
            coordinates(case, qi), coordinates(case, ki), case.shape, case.kernel, case.tile
        ):
            tiles, kt = size // tile, kernel // tile
            left, right = kt // 2, kt // 2 + (kt % 2 - 1)
            centre = (q // tile).clamp(left, (tiles - 1) - right)
            axis = (k // tile >= centre - left) & (k // tile <= centre + right)
            holds = axis if holds is None else holds & axis
        return holds

    return natten if case.kind == "neighborhood" else sta


def graphed_fields(impl: str, graphed: dict[str, Any], dense: dict[str, Any]) -> dict[str, Any]:
    """An implementation's times replayed from a CUDA graph and its efficiencies against dense
    cuDNN's graphed rates (bench_triton.graph_efficiency), as `{impl}_graph_…` fields, or its own
    capture error."""
    from bench_triton import graph_efficiency

    times = {key: value for key, value in graphed.items() if not key.endswith("tflops")}
    return {f"{impl}_{key}": value for key, value in {**times, **graph_efficiency(graphed, dense)}.items()}


def run_gpu(cases: list[Case], block_size: int | tuple[int, int], schedule: str) -> None:
    import torch
    import torch.nn.functional as F
    from bench_triton import count_pairs, graph_times, relative
    from bench_triton import time_fwd_bwd as timed
    from report import tuner_picks
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from maskc.backends.triton.passes import read_in_place_enabled

    flex = torch.compile(flex_attention, dynamic=False)
    for case in cases:
        pattern = compiled(case, block_size, schedule)
        n = pattern.n
        pattern.to_torch("cuda")
        mm = mask_mod(case)
        flex_pairs = count_pairs(mm, n)
        cpu = tile_efficiency(pattern)
        pairs = cpu["pairs"]
        if flex_pairs != pairs:
            log(case=case.name, error=f"pair counts differ: maskc {pairs}, flex mask_mod {flex_pairs}")
            continue
        q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            dense_f, dense_b = timed(lambda a, b, c: F.scaled_dot_product_attention(a, b, c), q, k, v)
            dense_graphed = graph_times(lambda a, b, c: F.scaled_dot_product_attention(a, b, c), q, k, v, n * n)
        dense = 4 * B * H * D * n * n
        flops = 4 * B * H * D * pairs
        row: dict[str, Any] = {
            "case": case.name,
            "n": n,
            "block": str(block_size),
            **cpu,
            **schedule_work(pattern),
            "read_in_place": read_in_place_enabled(),
        }
        row["dense_fwd_tflops"] = round(dense / dense_f / 1e9, 1)
        row["dense_fwdbwd_tflops"] = round(3.5 * dense / dense_b / 1e9, 1)
        row.update({f"dense_{key}": value for key, value in dense_graphed.items()})
        out = maskc.attention(q, k, v, pattern, backend="triton").detach()
        f, b = timed(lambda a, bb, c, p=pattern: maskc.attention(a, bb, c, p, backend="triton"), q, k, v)
        row.update(maskc_fwd_ms=round(f, 3), maskc_fwdbwd_ms=round(b, 3))
        row["configs"], row["tuning"] = tuner_picks(pattern.spec_hash, n)
        row.update(maskc_fwd_eff=round((flops / f) / (dense / dense_f), 3))
        row.update(maskc_fwdbwd_eff=round((flops / b) / (dense / dense_b), 3))
        ours = graph_times(lambda a, bb, c, p=pattern: maskc.attention(a, bb, c, p, backend="triton"), q, k, v, pairs)
        row.update(graphed_fields("maskc", ours, dense_graphed))
        # maskc's figures first, to the log: FlexAttention's compile can outlast a call's time limit
        print(json.dumps({"before_flex": True, **row}), flush=True)
        try:
            block_mask = create_block_mask(mm, None, None, n, n, device="cuda", _compile=True)
            ff, fb = timed(lambda a, bb, c, m=block_mask: flex(a, bb, c, block_mask=m), q, k, v)
            want = flex(q, k, v, block_mask=block_mask)
            row.update(flex_fwd_ms=round(ff, 3), flex_fwdbwd_ms=round(fb, 3))
            row.update(flex_fwd_eff=round((flops / ff) / (dense / dense_f), 3))
            row.update(flex_fwdbwd_eff=round((flops / fb) / (dense / dense_b), 3))
            row["maskc_vs_flex_rel_diff"] = round(relative(out, want), 5)
            theirs = graph_times(lambda a, bb, c, m=block_mask: flex(a, bb, c, block_mask=m), q, k, v, pairs)
            row.update(graphed_fields("flex", theirs, dense_graphed))
        except Exception as error:  # a FlexAttention failure is reported, not fatal
            row["flex_error"] = str(error)[:200]
        log(**row)
        del q, k, v, out
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- CPU


def run_cpu(cases: list[Case], blocks: list[int | tuple[int, int]]) -> None:
    print("| case | IR tile | active pairs | single: kernel work | eff. | auto: kernel work | eff. | auto passes |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for case in cases:
        for block in blocks:
            pairs = tile_efficiency(compiled(case, block))["pairs"]
            single = schedule_work(compiled(case, block, "single"))
            auto = schedule_work(compiled(case, block, "auto"))
            side = block if isinstance(block, int) else "x".join(map(str, block))
            print(
                f"| {case.name} | {side} | {pairs:,} | {single['kernel_work']:,} | "
                f"{pairs / single['kernel_work']:.3f} | {auto['kernel_work']:,} | {pairs / auto['kernel_work']:.3f} | "
                f"{', '.join(auto['passes'])} |",
                flush=True,
            )
            ROWS.append({"case": case.name, "block": str(block), "pairs": pairs, "single": single, "auto": auto})
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "bench_grids_cpu.json"), "w") as handle:
            json.dump(ROWS, handle, indent=1)


def _block(text: str) -> int | tuple[int, int]:
    parts = [int(x) for x in text.lower().split("x")]
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="all", help="comma-separated case numbers (0-based) or 'all'")
    parser.add_argument("--block-size", default="64", help="IR tile for the GPU runs: B or BMxBN")
    parser.add_argument("--schedule", default="auto", choices=["auto", "single"], help="how maskc runs (GPU)")
    parser.add_argument("--cpu", action="store_true", help="only the kernel work of each schedule, on the CPU")
    args = parser.parse_args()
    cases = CASES if args.cases == "all" else [CASES[int(k)] for k in args.cases.split(",")]
    if args.cpu:
        run_cpu(cases, [64, (128, 64)])
    else:
        run_gpu(cases, _block(args.block_size), args.schedule)


if __name__ == "__main__":
    main()
