"""Cluster labels on the GPU in one kernel (`kernels/nearest.py`), offered to maskc.clustering.

`nearest_direction(x, directions, signed)` is maskc.clustering's definition of a label (the
direction of largest cosine; with `signed`, over the directions and then their negatives),
computed from x as it is: no float32 copy of q and k, no score matrix in memory. Registered for
CUDA tensors (`maskc.registry.register_kernel`), so that every caller of
`maskc.clustering.cluster_labels` on the GPU — this backend's calls, and the CPU reference
resolving the same tensors — gets the same labels. A torch op (`maskc::nearest_direction`), so
that torch.compile keeps it whole.

Scores are float32 to within float32 rounding: bfloat16 points times three bfloat16 pieces of the
directions (exact products, float32 sums), other dtypes with `tf32x3` (exact float32 under the
interpreter), so labels agree with the torch computation except where two directions' scores
differ by about that rounding.
"""

from __future__ import annotations

import torch
import triton

from maskc.errors import BackendError
from maskc.registry import register_kernel

from .cache import interpreting
from .kernels import kernel_module

#: Points per program by whether x is bfloat16 (directions in bfloat16 pieces) or not (float32
#: operands of tf32x3, which take shared memory twice over), and directions per step of the walk
#: (fewer when there are fewer): on sm_90 two programs share an SM either way (bench/NOTES.md).
BLOCK_P = {True: 128, False: 64}
BLOCK_M = 64


def _precision(device: torch.device) -> str:
    """tf32x3 where tensor cores take TF32 (Ampere on), else plain float32 products."""
    if interpreting() or device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return "ieee"
    return "tf32x3"


def bfloat16_pieces(directions: torch.Tensor) -> torch.Tensor:
    """(3, ...) bfloat16 hi, mid, lo with hi + mid + lo = `directions` in float32 exactly (each piece
    holds the next 8 significant bits of what the earlier ones left)."""
    rest = directions.float()
    pieces = []
    for _ in range(3):
        piece = rest.to(torch.bfloat16)
        pieces.append(piece)
        rest = rest - piece.float()
    return torch.stack(pieces)


@torch.library.custom_op("maskc::nearest_direction", mutates_args=())
def nearest_direction(x: torch.Tensor, directions: torch.Tensor, signed: bool) -> torch.Tensor:
    """(G, P) int64 labels of x (G, P, D) against directions (G or 1, M, D): argmax over m of x·d_m,
    then (signed) of −x·d_m as labels M + m; ties to the lower label."""
    if x.dim() != 3 or directions.dim() != 3:
        raise BackendError(f"points must be (G, P, D) and directions (G or 1, M, D); got {tuple(x.shape)}, "
                           f"{tuple(directions.shape)}")  # fmt: skip
    groups, points, dim = x.shape
    count = directions.shape[1]
    if directions.shape[0] not in (1, groups) or directions.shape[2] != dim or count < 1:
        want = f"(1 or {groups}, M >= 1, {dim})"
        raise BackendError(f"directions must be {want} for points {tuple(x.shape)}; got {tuple(directions.shape)}")
    labels = torch.empty(groups, points, dtype=torch.int64, device=x.device)
    if groups == 0 or points == 0:
        return labels
    x = x if x.stride(-1) == 1 else x.contiguous()
    pieced = x.dtype == torch.bfloat16
    pieces = bfloat16_pieces(directions) if pieced else directions.float().contiguous()[None]
    kernel = kernel_module("nearest", interpreting()).maskc_nearest_direction
    grid = (triton.cdiv(points, BLOCK_P[pieced]), groups)
    kernel[grid](
        x, pieces, labels,
        x.stride(0), x.stride(1), pieces.stride(0), pieces.stride(1) if directions.shape[0] > 1 else 0,
        pieces.stride(2), points, count,
        DIM=dim, PADDED_DIM=max(16, triton.next_power_of_2(dim)), BLOCK_P=BLOCK_P[pieced],
        BLOCK_M=min(BLOCK_M, max(16, triton.next_power_of_2(count))), SIGNED=signed, PIECES=3 if pieced else 1,
        PRECISION=_precision(x.device), UPCAST=interpreting(), num_warps=8 if pieced else 4, num_stages=1,
    )  # fmt: skip
    return labels


@nearest_direction.register_fake
def _(x: torch.Tensor, directions: torch.Tensor, signed: bool) -> torch.Tensor:
    return x.new_empty(x.shape[:2], dtype=torch.int64)


register_kernel("nearest_direction", "cuda", nearest_direction)
