"""Run-time patterns on one GPU, in one process: packed documents, top-k block selection and clusters
(k-means routing with √n clusters fitted per call or held between calls, LSH with 64 buckets; causal),
against FlexAttention (the equivalent mask_mod), torch's varlen_attn (documents) and dense causal cuDNN.

Run on a CUDA machine: python3 bench/bench_runtime.py [--n 32768] [--cases documents,window,topk,kmeans,lsh]
[--no-flex] (`kmeans` runs the fitted and held cases, `kmeans_held` the held one alone; `topk_control`, after
`topk`, a control of the top-k case with contiguous blocks selected). MASKC_BENCH_PROFILE=1
also prints one profiled forward and one forward+backward of each maskc case (report.profile_step).
bf16, B = 1, H = 16, D = 128, the 8 document lengths of issue 13 (2381, 1211, 2568, 1799, 1174, 5864,
13954, 3817). maskc's times include its run-time layout build (the documents' tile tables, the top-k
selection, the cluster assignment and sort), since they run inside every call (a new batch's first
layer); the documents cases are timed again with the documents tensor shared with the call before,
whose tables then serve (a model's later layers; backends/triton/reuse.py). FlexAttention's kernel
is timed with its block mask built once, and the block-mask build is timed apart (per batch it is
part of the cost). Both sides run the same mask: the active pairs of Flex's mask_mod are counted on
the GPU and must equal maskc's exact count (from the host resolution; for clusters from the labels
on the GPU), and the outputs' relative difference is printed. Efficiency
is each time against dense causal cuDNN's in the same run, scaled by the work: (pairs / dense pairs)
· dense time / time. Medians of triton.testing.do_bench. Writes JSON to $OUT/bench_runtime.json
when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from bench_triton import graph_efficiency, graph_times, time_fwd_bwd  # the static patterns' timings
from report import profile_forward, profile_fwd_bwd, save_rows, tuner_picks
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from triton.testing import do_bench

import maskc
from maskc.backends.triton.reuse import REUSE_LAYOUT
from maskc.clustering import resolve_dynamic
from maskc.errors import MaskcWarning
from maskc.selection import select_blocks

B, H, D = 1, 16, 128
DTYPE = torch.bfloat16
LENGTHS = [2381, 1211, 2568, 1799, 1174, 5864, 13954, 3817]
ROWS: list[dict[str, Any]] = []
#: False with --no-flex: maskc (and varlen_attn) only, no FlexAttention compile.
FLEX = True


def log(**row: Any) -> None:
    ROWS.append(row)
    print(json.dumps(row), flush=True)
    save_rows("bench_runtime.json", ROWS)


def count_pairs(mask_mod: Callable, n: int, heads: int) -> int:
    """Active pairs of a mask_mod over every head, evaluated on the GPU in row chunks."""
    total, keys = 0, torch.arange(n, device="cuda")[None, :]
    for h in range(heads):
        for lo in range(0, n, 2048):
            rows = torch.arange(lo, min(lo + 2048, n), device="cuda")[:, None]
            total += int(mask_mod(0, h, rows, keys).sum())
    return total


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def compiled(spec: dict[str, Any], n: int) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(spec), seq_len=n, heads=H)


class Dense:
    """Dense causal cuDNN in the same run: the efficiency yardstick."""

    def __init__(self, n: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            dense = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True)  # noqa: E731
            self.fwd, self.fwd_bwd = time_fwd_bwd(dense, q, k, v)
            self.graphed = graph_times(dense, q, k, v, n * (n + 1) // 2)
        self.pairs = H * n * (n + 1) // 2
        log(impl="sdpa_cudnn", case="dense_causal", fwd_ms=round(self.fwd, 3), fwdbwd_ms=round(self.fwd_bwd, 3),
            **self.graphed)  # fmt: skip

    def efficiency(self, pairs: int, fwd: float, fwd_bwd: float) -> dict[str, float]:
        share = pairs / self.pairs
        return {
            "fwd_ms": round(fwd, 3),
            "fwdbwd_ms": round(fwd_bwd, 3),
            "fwd_efficiency": round(share * self.fwd / fwd, 3),
            "fwdbwd_efficiency": round(share * self.fwd_bwd / fwd_bwd, 3),
        }

    def graph_efficiency(self, fn: Callable, pairs: int, q, k, v) -> dict[str, Any]:
        """`fn`'s forward and forward+backward ms replayed from a CUDA graph (bench_triton.graph_times)
        and its efficiencies against cuDNN's graphed rates of this run, or the capture's error."""
        graphed = graph_times(fn, q, k, v, pairs / H)  # graph_times counts pairs per head
        times = {key: value for key, value in graphed.items() if not key.endswith("tflops")}
        return {**times, **graph_efficiency(graphed, self.graphed)}


def bench_maskc(case: str, ours: Callable, spec_hash: str, pairs: int, dense: Dense, q, k, v) -> torch.Tensor:
    """maskc's times and efficiencies, with the tuner's picks and timings for the pattern (spec hash)."""
    out = ours(q, k, v)
    out.backward(torch.randn_like(out))
    fwd, fwd_bwd = time_fwd_bwd(ours, q, k, v)
    configs, tuning = tuner_picks(spec_hash, q.shape[2])
    log(impl="maskc", case=case, pairs=pairs, **dense.efficiency(pairs, fwd, fwd_bwd),
        **dense.graph_efficiency(ours, pairs, q, k, v), configs=configs, tuning=tuning)  # fmt: skip
    profile_forward(ours, q, k, v, case)
    profile_fwd_bwd(ours, q, k, v, case)
    return ours(q, k, v).detach()


def bench_flex(case: str, mask_mod: Callable, heads: int | None, pairs: int, dense: Dense, reference, q, k, v) -> None:
    if not FLEX:
        return
    torch._dynamo.reset()
    flex_pairs = count_pairs(mask_mod, q.shape[2], H)
    if flex_pairs != pairs:
        log(impl="flex", case=case, error=f"mask mismatch: maskc {pairs} pairs, flex mask_mod {flex_pairs}")
        return
    n = q.shape[2]

    def build() -> Any:
        return create_block_mask(mask_mod, 1, heads, n, n, device="cuda", _compile=True)

    block_mask = build()
    build_ms = do_bench(build, warmup=3, rep=10, return_mode="median")
    flex = torch.compile(flex_attention, dynamic=False)

    def theirs(a, b, c):
        return flex(a, b, c, block_mask=block_mask)

    agreement = relative(reference, theirs(q, k, v))
    fwd, fwd_bwd = time_fwd_bwd(theirs, q, k, v)
    log(impl="flex", case=case, block_mask_ms=round(build_ms, 3), out_vs_maskc=round(agreement, 5),
        **dense.efficiency(pairs, fwd, fwd_bwd), **dense.graph_efficiency(theirs, pairs, q, k, v))  # fmt: skip


def bench_varlen(case: str, window: int | None, pairs: int, dense: Dense, reference, q, k, v) -> None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError as error:
        log(impl="varlen_attn", case=case, error=str(error)[:200])
        return
    cu = torch.tensor([0, *np.cumsum(LENGTHS).tolist()], device="cuda", dtype=torch.int32)
    longest = max(LENGTHS)
    size = (-1, 0) if window is None else (window - 1, 0)

    def theirs(a, b, c):
        return varlen_attn(a, b, c, cu, cu, longest, longest, window_size=size)

    # varlen_attn takes packed (n, H, D) tensors: its own copies, made before any timing
    packed = [x.detach()[0].transpose(0, 1).contiguous().requires_grad_() for x in (q, k, v)]
    try:
        agreement = relative(reference, theirs(*packed).transpose(0, 1)[None])
        fwd, fwd_bwd = time_fwd_bwd(theirs, *packed)
        log(impl="varlen_attn", case=case, out_vs_maskc=round(agreement, 5), **dense.efficiency(pairs, fwd, fwd_bwd),
            **dense.graph_efficiency(theirs, pairs, *packed))  # fmt: skip
    except Exception as error:  # an unsupported option is reported, not fatal
        log(impl="varlen_attn", case=case, error=f"{type(error).__name__}: {str(error)[:200]}")


def bench_documents(case: str, window: int | None, n: int, dense: Dense, q, k, v) -> None:
    part: Any = (
        {"document": {}}
        if window is None
        else {"intersect": [{"document": {}}, {"window": {"before": window - 1, "after": 0}}]}
    )
    pattern = compiled({"name": case, "causal": True, "pattern": part}, n)
    ids = maskc.ids_from_lengths(LENGTHS)
    pairs = H * maskc.compile(pattern.spec, seq_len=n, documents=ids).layouts[0].element_count()
    documents = torch.as_tensor(ids, device="cuda")[None]

    def ours(a, b, c):
        return maskc.attention(a, b, c, pattern, backend="triton", documents=documents)

    with mock.patch.dict(os.environ, {REUSE_LAYOUT: "0"}):  # every call builds, as a batch's first layer
        reference = bench_maskc(case, ours, pattern.spec_hash, pairs, dense, q, k, v)
    # a model's later layers: the same documents tensor, so the first layer's tables serve (reuse.py)
    fwd, fwd_bwd = time_fwd_bwd(ours, q, k, v)
    log(impl="maskc", case=f"{case}, documents shared with the call before", pairs=pairs,
        **dense.efficiency(pairs, fwd, fwd_bwd))  # fmt: skip
    doc = documents[0]

    def mask_mod(b, h, i, j):
        keep = (doc[i] == doc[j]) & (i >= j)
        return keep if window is None else keep & (i - j < window)

    bench_flex(case, mask_mod, None, pairs, dense, reference, q, k, v)
    bench_varlen(case, window, pairs, dense, reference, q, k, v)


TOPK_SPEC = {
    "name": "nsa",
    "causal": True,
    "block_size": 64,
    "pattern": [{"window": {"before": 511, "after": 0}}, {"topk": {"blocks": 16}}, {"sink": {"count": 4}}],
}


def stored_tiles(pattern: maskc.CompiledPattern, q, k) -> int:
    """Tiles of the 64 × 64 grid the forward stores (the tuner's pick in every run so far), over every
    head, from the call's run-time tile kinds."""
    from maskc.backends.triton.runtime import CallInputs, StaticMaps, tile_kinds
    from maskc.grid import TileGrid

    rule, grid = pattern.layouts[0].rule, TileGrid(pattern.n, 64, 64)
    with torch.no_grad():
        kinds = tile_kinds(rule, grid, CallInputs.prepare([rule], q, k, None), StaticMaps(), q.device)
    return int((kinds > 0).expand(B, H, grid.row_tiles, grid.col_tiles).sum())


def bench_topk(n: int, dense: Dense, q, k, v) -> None:
    case = "topk16 (B=64) + causal window 512 + 4 sinks"
    pattern = compiled(TOPK_SPEC, n)

    def ours(a, b, c):
        return maskc.attention(a, b, c, pattern, backend="triton")

    with torch.no_grad():
        resolved = resolve_dynamic(pattern, q.detach(), k.detach())[0]
        selected = select_blocks(q.detach(), k.detach(), maskc.Topk(blocks=16), 64, True)[0]
    pairs = sum(resolved.layout_of_head(h).element_count() for h in range(H))
    log(impl="maskc", case=case, tiles_64x64=stored_tiles(pattern, q.detach(), k.detach()))
    reference = bench_maskc(case, ours, pattern.spec_hash, pairs, dense, q, k, v)

    def mask_mod(b, h, i, j):
        return (i >= j) & ((i - j < 512) | (j < 4) | selected[h, i // 64, j // 64])

    bench_flex(case, mask_mod, H, pairs, dense, reference, q, k, v)


def scores_before_window(q: torch.Tensor, k: torch.Tensor, block: int, share: str) -> torch.Tensor:
    """Block scores that rank, for query block I, the key blocks just before its window first (J from
    I − 9 down to I − 24, nearest to I − 16.5 first): `bench_topk_control`'s selection."""
    blocks = -(-q.shape[2] // block)
    index = torch.arange(blocks, device=q.device, dtype=torch.float32)
    scores = -(index[:, None] - 16.5 - index[None, :]).abs()
    return scores.expand(q.shape[0], q.shape[1], blocks, blocks)


def bench_topk_control(n: int, dense: Dense, q, k, v) -> None:
    """A control, not a pattern: the top-k case with each query block's 16 blocks taken just before its
    window instead of by score, so the kernels compute about as many tiles (`tiles_64x64`) but read
    neighbouring key blocks, as a band does. Against the top-k case's times (the tuner keeps that
    case's picks: same spec) it says what the selection's scattered loads cost (bench/NOTES.md)."""
    case = "topk16 control: the 16 blocks before the window + causal window 512 + 4 sinks"
    pattern = compiled(TOPK_SPEC, n)

    def ours(a, b, c):
        return maskc.attention(a, b, c, pattern, backend="triton")

    with mock.patch("maskc.selection.block_scores", scores_before_window):
        with torch.no_grad():
            resolved = resolve_dynamic(pattern, q.detach(), k.detach())[0]
        pairs = sum(resolved.layout_of_head(h).element_count() for h in range(H))
        log(impl="maskc", case=case, tiles_64x64=stored_tiles(pattern, q.detach(), k.detach()))
        bench_maskc(case, ours, pattern.spec_hash, pairs, dense, q, k, v)


def cluster_pairs(q_labels: torch.Tensor, k_labels: torch.Tensor, clusters: int) -> int:
    """Causal pairs inside clusters, summed over heads, on the GPU: for each query, the keys of its
    cluster at or before it (a running count of each cluster's keys)."""
    total = 0
    for h in range(q_labels.shape[1]):
        running = F.one_hot(k_labels[0, h], clusters).cumsum(dim=0)  # (n, clusters)
        total += int(running.gather(1, q_labels[0, h, :, None]).sum())
    return total


def bench_clusters(method: str, n: int, dense: Dense, q, k, v, held: bool = False) -> None:
    """Clusters in sorted order, end to end (assignment, sort, tables, kernels, scatter), against Flex
    with the same labels in its mask_mod. `held`: k-means centroids kept between calls
    (maskc.nn.ClusterCentroids, as Routing Transformer trains) instead of fitted per call."""
    from maskc.backends.triton.clusters import cluster_inputs
    from maskc.cluster_order import label_keys, sorting_leaf

    clusters = round(n**0.5) if method == "kmeans" else 64
    case = f"{method} {clusters} clusters{', held centroids' if held else ''}, causal"
    spec = {"name": method, "causal": True, "pattern": {"cluster": {"clusters": clusters, "method": method}}}
    pattern = compiled(spec, n)
    centroids = None
    if held:
        module = maskc.nn.ClusterCentroids(H, clusters, D).cuda()
        module.update(q.detach(), k.detach())
        centroids = module.centroids

    def ours(a, b, c):
        return maskc.attention(a, b, c, pattern, backend="triton", centroids=centroids)

    try:
        with torch.no_grad():
            values = cluster_inputs(pattern, q.detach(), k.detach(), None, centroids)
            q_labels, k_labels = (values[key].long() for key in label_keys(sorting_leaf(pattern)))
        assign_ms = do_bench(lambda: cluster_inputs(pattern, q.detach(), k.detach(), None, centroids), warmup=3,
                             rep=20, return_mode="median")  # fmt: skip
        pairs = cluster_pairs(q_labels, k_labels, clusters)
        out = ours(q, k, v)
        out.backward(torch.randn_like(out))
        fwd, fwd_bwd = time_fwd_bwd(ours, q, k, v)
        log(impl="maskc", case=case, pairs=pairs, assign_and_sort_ms=round(assign_ms, 3),
            fwd_vs_dense=round(fwd / dense.fwd, 3), fwdbwd_vs_dense=round(fwd_bwd / dense.fwd_bwd, 3),
            target="at most 0.5 of dense causal, fwd and fwd+bwd", **dense.efficiency(pairs, fwd, fwd_bwd),
            **dense.graph_efficiency(ours, pairs, q, k, v))  # fmt: skip
        profile_forward(ours, q, k, v, case)
        profile_fwd_bwd(ours, q, k, v, case)
        reference = ours(q, k, v).detach()
    except Exception as error:
        log(impl="maskc", case=case, error=f"{type(error).__name__}: {str(error)[:200]}")
        return
    ql, kl = q_labels[0].int(), k_labels[0].int()

    def mask_mod(b, h, i, j):
        return (i >= j) & (ql[h, i] == kl[h, j])

    bench_flex(case, mask_mod, H, pairs, dense, reference, q, k, v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=sum(LENGTHS))
    parser.add_argument("--cases", default="documents,window,topk,kmeans,lsh")
    parser.add_argument("--no-flex", action="store_true", help="leave FlexAttention out (no compile)")
    args = parser.parse_args()
    global FLEX
    FLEX = not args.no_flex
    if args.n != sum(LENGTHS):
        parser.error(f"the documents sum to {sum(LENGTHS)}; --n must be that")
    cases = args.cases.split(",")
    unknown = set(cases) - {"documents", "window", "topk", "topk_control", "kmeans", "kmeans_held", "lsh"}
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}")
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, args.n, D, device="cuda", dtype=DTYPE, requires_grad=True) for _ in range(3))
    log(device=torch.cuda.get_device_name(), torch=torch.__version__, n=args.n, lengths=LENGTHS)
    dense = Dense(args.n, q, k, v)
    if "documents" in cases:
        bench_documents("documents, document-causal", None, args.n, dense, q, k, v)
    if "window" in cases:
        bench_documents("documents, causal window 1024 inside each", 1024, args.n, dense, q, k, v)
    if "topk" in cases:
        bench_topk(args.n, dense, q, k, v)
    if "topk_control" in cases:
        bench_topk_control(args.n, dense, q, k, v)
    if "kmeans" in cases:
        bench_clusters("kmeans", args.n, dense, q, k, v)
    if "kmeans" in cases or "kmeans_held" in cases:
        bench_clusters("kmeans", args.n, dense, q, k, v, held=True)
    if "lsh" in cases:
        bench_clusters("lsh", args.n, dense, q, k, v)


if __name__ == "__main__":
    main()
