"""Run-time cluster assignments from q and k, and the static pattern they resolve a cluster spec to.

A `cluster` primitive is symbolic at compile time. At run time the queries and keys decide it:
`cluster_labels` assigns every query and key a cluster (k-means or LSH, both seeded, so the same
inputs give the same labels on any device, up to float32 rounding where two centroids or buckets
score within it), and `resolve_dynamic` turns each `ClusterRule` into a
`LabelRule` for every (batch, head) and lays the result out like any static rule. Backends run the
resolved patterns, so two backends given the same resolved pattern compute the same mask.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from maskc.errors import BackendError, DynamicPatternError, SpecError
from maskc.ir import BlockLayout, CompiledPattern
from maskc.ir.build import build_layout
from maskc.origin import Origin, named
from maskc.primitives.cluster import Cluster
from maskc.registry import kernel_for
from maskc.rules import ClusterRule, LabelRule, Rule, SelectedBlocksRule, TopkRule, rewrite
from maskc.selection import select_blocks

#: Most bytes of similarity scores held at once while assigning clusters (per chunk of heads).
SCORE_BUDGET_BYTES = 1 << 28


#: The origin errors name when the caller gives none.
CLUSTER = named("cluster")


def _normalised(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors in float32 at least (bf16 and fp16 inputs are upcast), so angles decide."""
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return torch.nn.functional.normalize(x, dim=-1)


def _seeded(seed: int) -> torch.Generator:
    """A CPU generator: draws made on the CPU and moved are the same for every device."""
    return torch.Generator(device="cpu").manual_seed(seed)


@torch.library.custom_op("maskc::seeded_draw", mutates_args=())
def seeded_draw(seed: int, rows: int, cols: int, normal: bool) -> torch.Tensor:
    """Draws of one seeded CPU generator: standard normal float32 or uniform [0, 1) float64, (rows, cols).

    An operator, so that torch.compile records the draw in its graph (a generator cannot be traced).
    """
    if normal:
        return torch.randn(rows, cols, generator=_seeded(seed), dtype=torch.float32)
    return torch.rand(rows, cols, generator=_seeded(seed), dtype=torch.float64)


@seeded_draw.register_fake
def _(seed: int, rows: int, cols: int, normal: bool) -> torch.Tensor:
    return torch.empty(rows, cols, dtype=torch.float32 if normal else torch.float64)


#: Seeded draws by (seed, rows, cols, normal, device, dtype): constants of the spec, copied to a device
#: once, so later calls (and CUDA graph captures after a first call) copy nothing.
_DRAWS: dict[tuple[int, int, int, bool, str, torch.dtype], torch.Tensor] = {}


def seeded_constant(
    seed: int, rows: int, cols: int, normal: bool, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """`seeded_draw` on `device` in `dtype` (a traced call records the draw in its graph instead)."""
    if torch.compiler.is_compiling():
        return seeded_draw(seed, rows, cols, normal).to(device=device, dtype=dtype)
    key = (seed, rows, cols, normal, str(device), dtype)
    if key not in _DRAWS:
        _DRAWS[key] = seeded_draw(seed, rows, cols, normal).to(device=device, dtype=dtype)
    return _DRAWS[key]


def _kmeans_seeds(points: torch.Tensor, params: Cluster) -> torch.Tensor:
    """k-means++ seeding on (G, P, D) unit vectors: (G, clusters, D) initial centroids.

    Each next seed is drawn with probability proportional to its distance 1 − cos from the
    nearest seed so far. The uniforms behind the draws come from one seeded CPU generator, so
    the choice depends only on the seed and the data, and every step stays on the data's device
    (the uniforms are float64 constants there: nothing is read back).
    """
    groups, count, dim = points.shape
    uniforms = seeded_constant(params.seed, 1, params.clusters, False, points.device, torch.float64)[0]
    first = (uniforms[:1] * count).long().clamp_max(count - 1)
    seeds = [points.index_select(1, first)[:, 0]]
    nearest = torch.einsum("gpd,gd->gp", points, seeds[0])
    for step in range(1, params.clusters):
        cumulative = (1 - nearest).clamp_min(0).cumsum(dim=-1)
        target = uniforms[step].to(cumulative.dtype) * cumulative[:, -1:]
        pick = torch.searchsorted(cumulative, target).clamp_max(count - 1)
        seed = points.gather(1, pick[..., None].expand(groups, 1, dim))[:, 0]
        seeds.append(seed)
        nearest = torch.maximum(nearest, torch.einsum("gpd,gd->gp", points, seed))
    return torch.stack(seeds, dim=1)


def _kmeans_centroids(points: torch.Tensor, params: Cluster) -> torch.Tensor:
    """Spherical k-means on (G, P, D) unit vectors: (G, clusters, D) unit centroids.

    After k-means++ seeding, each of the `params.iterations` steps assigns points by largest
    cosine similarity and moves each centroid to the normalised mean of its points (a centroid
    with no point stays where it is). Sums go through a one-hot matrix product rather than
    atomic adds, so GPU runs repeat exactly.
    """
    centroids = _kmeans_seeds(points, params)
    for _ in range(params.iterations):
        nearest = torch.bmm(points, centroids.transpose(1, 2)).argmax(dim=-1)
        onehot = torch.nn.functional.one_hot(nearest, params.clusters).to(points.dtype)
        moved = torch.nn.functional.normalize(torch.bmm(onehot.transpose(1, 2), points), dim=-1)
        centroids = torch.where(onehot.sum(dim=1)[..., None] > 0, moved, centroids)
    return centroids


def _kmeans_labels(q: torch.Tensor, k: torch.Tensor, params: Cluster) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, N, D) unit queries and keys → labels from centroids fitted to both together."""
    centroids = _kmeans_centroids(torch.cat([q, k], dim=1), params)
    return nearest_direction(q, centroids), nearest_direction(k, centroids)


def _lsh_labels(q: torch.Tensor, k: torch.Tensor, params: Cluster) -> tuple[torch.Tensor, torch.Tensor]:
    """Angular LSH: bucket = argmax([xR, −xR]) for one seeded random rotation R (D × clusters/2)."""
    rotation = seeded_constant(params.seed, q.shape[-1], params.clusters // 2, True, q.device, torch.float32)
    directions = rotation.T.contiguous()[None]
    return nearest_direction(q, directions, signed=True), nearest_direction(k, directions, signed=True)


def nearest_direction(x: torch.Tensor, directions: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """(G, P) int64: for each point of x (G, P, D), the m of largest x̂ · d_m over directions (G or 1, M,
    D) (for unit directions, the largest cosine); with `signed` over the M directions and then their
    negatives, −d_m being label M + m. Ties go to the lower label.

    A backend's kernel computes it where one is offered for x's device and takes x's dtype and size
    (`maskc.registry.kernel_for`: the Triton backend's on CUDA, bfloat16 up to head dim 256, float16
    and float32 up to 128), torch otherwise (`torch_nearest_direction`). The two agree except where two
    scores differ by about float32 rounding.
    """
    _check_directions(x, directions)
    kernel = kernel_for("nearest_direction", x.device.type)
    labels = None if kernel is None else kernel(x, directions, signed)
    return torch_nearest_direction(x, directions, signed) if labels is None else labels


def torch_nearest_direction(x: torch.Tensor, directions: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """`nearest_direction` in torch: x as float32 (or wider) unit vectors, SCORE_BUDGET_BYTES of scores at
    a time."""
    groups, points, _ = x.shape
    per_group = points * directions.shape[1] * (2 if signed else 1) * 4
    step = max(1, SCORE_BUDGET_BYTES // max(per_group, 1))
    first = _first_copies(directions)
    parts = []
    for lo in range(0, groups, step):
        units = _normalised(x[lo : lo + step])
        chunk = directions if directions.shape[0] == 1 else directions[lo : lo + step]
        scores = torch.matmul(units, chunk.to(units.dtype).transpose(1, 2))
        if first is not None:  # equal directions score alike, whatever path the product took for each
            index = (first if first.shape[0] == 1 else first[lo : lo + step])[:, None, :].expand(scores.shape)
            scores = scores.gather(-1, index)
        parts.append((torch.cat([scores, -scores], dim=-1) if signed else scores).argmax(dim=-1))
    return torch.cat(parts) if parts else torch.zeros(0, points, dtype=torch.int64, device=x.device)


def _first_copies(directions: torch.Tensor) -> torch.Tensor | None:
    """(G or 1, M) int64: for each direction of its group, the label of the first one equal to it (its
    own when it has no earlier copy); None on a GPU. A CPU matrix product may round equal columns
    differently (its BLAS kernel takes remainder columns by another path), so scores are read from the
    first copy. Not on a GPU, whose labels come from the Triton kernel, exact on ties (and where
    torch's path, for inputs the kernel declines, keeps its product's rounding)."""
    if directions.device.type != "cpu":
        return None
    wide = directions.double()  # float32 differences square without underflow: 0 only between equals
    apart = torch.cdist(wide, wide, compute_mode="donot_use_mm_for_euclid_dist")
    return (apart == 0).to(torch.uint8).argmax(dim=-1)  # the first maximum: the earliest equal direction


def _check_directions(x: torch.Tensor, directions: torch.Tensor) -> None:
    """Points (G, P, D) and directions (1 or G, M >= 1, D), or a BackendError saying which is not."""
    if x.dim() != 3 or directions.dim() != 3:
        shapes = f"{tuple(x.shape)} and {tuple(directions.shape)}"
        raise BackendError(f"points must be (G, P, D) and directions (G or 1, M, D); got {shapes}")
    groups, _, dim = x.shape
    if directions.shape[0] not in (1, groups) or directions.shape[1] < 1 or directions.shape[2] != dim:
        lead = "1" if groups == 1 else f"1 or {groups}"
        raise BackendError(
            f"directions must be ({lead}, M >= 1, {dim}) for points {tuple(x.shape)}; got {tuple(directions.shape)}"
        )


def _check_params(params: Cluster, n: int, origin: Origin) -> None:
    if params.method == "kmeans" and params.clusters > 2 * n:
        raise SpecError(
            f"kmeans asks for {params.clusters} clusters from only {2 * n} query and key vectors (n = {n})",
            path=origin.child("clusters"),
        )


def check_centroids(params: Cluster, centroids: torch.Tensor, heads: int, dim: int, origin: Origin = CLUSTER) -> None:
    """Centroids given to a call must be (heads, clusters, D) floats of a k-means leaf."""
    if params.method != "kmeans":
        raise BackendError(f"{origin}: centroids were given, but this cluster leaf hashes (lsh); they serve kmeans")
    if not isinstance(centroids, torch.Tensor) or not centroids.is_floating_point():
        raise BackendError(f"centroids must be a floating-point tensor (heads, clusters, D), got {type(centroids)}")
    want = (heads, params.clusters, dim)
    if tuple(centroids.shape) != want:
        raise BackendError(
            f"{origin}: centroids must have shape (heads, clusters, D) = {want}; got {tuple(centroids.shape)}"
        )


def cluster_labels(
    params: Cluster,
    q: torch.Tensor,
    k: torch.Tensor,
    origin: Origin = CLUSTER,
    centroids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster of every query and key: q and k (..., N, D) on any device → two int64 (..., N) tensors.

    Queries and keys of one (batch, head) share one clustering; labels lie in 0 … clusters − 1, each
    the nearest direction (`nearest_direction`) among the centroids or the LSH rotation's columns.
    `origin` names the spec's cluster primitive in errors. `centroids` (k-means only), broadcastable
    to (..., clusters, D), replace the per-call fit: each vector takes its nearest centroid by cosine
    (`maskc.nn.ClusterCentroids` keeps them between calls).
    """
    if q.shape != k.shape:
        raise BackendError(f"cluster assignment needs q and k of one shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    lead, (n, dim) = q.shape[:-2], q.shape[-2:]
    _check_params(params, n, origin)
    qg, kg = q.reshape(-1, n, dim), k.reshape(-1, n, dim)
    if centroids is not None:
        fixed = _normalised(centroids).expand(*lead, params.clusters, dim).reshape(-1, params.clusters, dim)
        q_labels, k_labels = nearest_direction(qg, fixed), nearest_direction(kg, fixed)
    elif params.method == "lsh":
        q_labels, k_labels = _lsh_labels(qg, kg, params)
    else:
        q_labels, k_labels = _fitted_kmeans_labels(qg, kg, params)
    return q_labels.reshape(*lead, n), k_labels.reshape(*lead, n)


def _fitted_kmeans_labels(q: torch.Tensor, k: torch.Tensor, params: Cluster) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means fitted per call on (G, N, D) queries and keys, a few groups at a time, so that the
    fit's scores stay within SCORE_BUDGET_BYTES."""
    per_group = 2 * q.shape[1] * params.clusters * 4
    step = max(1, SCORE_BUDGET_BYTES // per_group)
    parts = [
        _kmeans_labels(_normalised(q[lo : lo + step]), _normalised(k[lo : lo + step]), params)
        for lo in range(0, q.shape[0], step)
    ]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _run_time_leaves(pattern: CompiledPattern) -> dict[Origin, tuple[Rule, list[int]]]:
    """origin → (leaf decided by q and k, heads whose pattern holds it)."""
    found: dict[Origin, tuple[Rule, list[int]]] = {}
    for index, layout in enumerate(pattern.layouts):
        heads = np.flatnonzero(pattern.head_layout == index).tolist()
        for leaf in layout.rule.leaves():
            if isinstance(leaf, (ClusterRule, TopkRule)):
                found.setdefault(leaf.origin, (leaf, []))[1].extend(heads)
    return found


def check_call_centroids(pattern: CompiledPattern, centroids: torch.Tensor | None, heads: int, dim: int) -> None:
    """Centroids given to a call need a pattern with cluster leaves, all k-means with as many clusters."""
    if centroids is None:
        return
    leaves = [leaf for leaf, _ in _run_time_leaves(pattern).values() if isinstance(leaf, ClusterRule)]
    if not leaves:
        raise BackendError(f"centroids were given, but pattern {pattern.spec.name!r} has no cluster leaf")
    for leaf in leaves:
        check_centroids(leaf.params, centroids, heads, dim, leaf.origin)


def _check_inputs(pattern: CompiledPattern, q: torch.Tensor, k: torch.Tensor) -> int:
    """Validate shapes against the pattern; returns the query heads per key head."""
    if q.dim() != 4 or k.dim() != 4:
        raise BackendError(f"q and k must be (B, H, N, D); got {tuple(q.shape)} and {tuple(k.shape)}")
    batch, heads, n, dim = q.shape
    if k.shape[0] != batch or k.shape[2] != n or k.shape[3] != dim:
        raise BackendError(f"k {tuple(k.shape)} does not match q {tuple(q.shape)} in batch, length or head size")
    if n != pattern.n:
        raise BackendError(f"the pattern was compiled for n = {pattern.n}, but q has length {n}")
    if heads != pattern.heads:
        raise BackendError(f"the pattern was compiled for {pattern.heads} heads, but q has {heads}")
    if heads % k.shape[1]:
        raise BackendError(f"q's {heads} heads are not a multiple of k's {k.shape[1]} heads")
    return heads // k.shape[1]


#: (batch element, head) → the resolved rule of one run-time leaf.
LeafResolver = Callable[[int, int], Rule]


def _cluster_resolver(
    leaf: ClusterRule, heads: list[int], q: torch.Tensor, k: torch.Tensor, group: int, centroids: torch.Tensor | None
) -> LeafResolver:
    fixed = None if centroids is None else centroids[heads]
    q_labels, k_labels = cluster_labels(leaf.params, q[:, heads], k[:, [h // group for h in heads]], leaf.origin, fixed)
    q_labels, k_labels = q_labels.cpu().numpy(), k_labels.cpu().numpy()
    slot = {h: s for s, h in enumerate(heads)}
    return lambda b, h: LabelRule(q_labels[b, slot[h]], k_labels[b, slot[h]], leaf.origin)


def _topk_resolver(leaf: TopkRule, q: torch.Tensor, k: torch.Tensor) -> LeafResolver:
    selected = select_blocks(q, k, leaf.params, leaf.block, leaf.causal).cpu().numpy()
    n = q.shape[2]
    return lambda b, h: SelectedBlocksRule(selected[b, h], leaf.block, n, leaf.origin)


def resolve_dynamic(
    pattern: CompiledPattern, q: torch.Tensor, k: torch.Tensor, centroids: torch.Tensor | None = None
) -> list[CompiledPattern]:
    """One static pattern per batch element, with one layout per head, from q and k: cluster leaves
    become label rules (the cluster labels of q and k), top-k leaves the blocks they select.

    q: (B, H, N, D); k: (B, Hkv, N, D) with H divisible by Hkv (head h reads key head h // (H // Hkv)).
    Static patterns need nothing resolved: they come back as they are, once per batch element.
    Document leaves must be resolved before (`maskc.compile(..., documents=ids)`). `centroids`
    (H, clusters, D) replace the per-call k-means fit of every cluster leaf (`check_call_centroids`).
    """
    group = _check_inputs(pattern, q, k)
    check_call_centroids(pattern, centroids, q.shape[1], q.shape[3])
    batch = q.shape[0]
    if not pattern.dynamic:
        return [pattern] * batch
    resolvers: dict[Origin, LeafResolver] = {}
    for origin, (leaf, heads) in _run_time_leaves(pattern).items():
        if isinstance(leaf, ClusterRule):
            resolvers[origin] = _cluster_resolver(leaf, heads, q, k, group, centroids)
        else:
            resolvers[origin] = _topk_resolver(leaf, q, k)  # type: ignore[arg-type]
    return [
        CompiledPattern(
            spec=pattern.spec,
            spec_hash=pattern.spec_hash,
            n=pattern.n,
            block_m=pattern.block_m,
            block_n=pattern.block_n,
            heads=pattern.heads,
            layouts=tuple(_resolved_layout(pattern.layout_of_head(h), resolvers, b, h) for h in range(pattern.heads)),
            head_layout=np.arange(pattern.heads, dtype=np.int32),
        )
        for b in range(batch)
    ]


def _resolved_layout(layout: BlockLayout, resolvers: dict[Origin, LeafResolver], batch: int, head: int) -> BlockLayout:
    """The layout of one (batch, head): run-time leaves resolved; a static layout is shared."""
    if not layout.rule.dynamic:
        return layout

    def resolved(leaf: Rule) -> Rule | None:
        resolver = resolvers.get(leaf.origin) if isinstance(leaf, (ClusterRule, TopkRule)) else None
        return None if resolver is None else resolver(batch, head)

    rule = rewrite(layout.rule, leaf=resolved)
    if rule.dynamic:
        leaves = [leaf.describe() for leaf in rule.leaves() if leaf.dynamic]
        raise DynamicPatternError(f"{', '.join(leaves)}: decided by the documents; pass documents= to the call")
    return build_layout(rule, layout.grid)
