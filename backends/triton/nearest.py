"""Cluster labels on the GPU in one kernel (`kernels/nearest.py`), offered to maskc.clustering.

`nearest_direction(x, directions, signed)` is maskc.clustering's definition of a label (the
direction of largest cosine; with `signed`, over the directions and then their negatives),
computed from x as it is: no float32 copy of q and k, no score matrix in memory. `nearest_labels`
is registered for CUDA tensors (`maskc.registry.register_kernel`), so that every caller of
`maskc.clustering.cluster_labels` on the GPU — this backend's calls, and the CPU reference
resolving the same tensors — gets the same labels; it leaves dtypes and sizes the kernel does not
take to torch. A torch op (`maskc::nearest_direction`), so that torch.compile keeps it whole.

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
from .launching import launch_kernel

#: Points per program, directions per step of the walk (fewer when there are fewer) and warps, by
#: whether x is bfloat16 (directions in bfloat16 pieces; else float32 operands of tf32x3, which take
#: shared memory twice over) and whether the padded head dim exceeds 128. On sm_90 (offline
#: compile): at most 131 KB of shared memory, within an A100's 163 KB too, and no spills at head
#: dims 64, 128 and 256 (bench/NOTES.md).
_BLOCKS = {(True, False): (128, 64, 8), (True, True): (64, 64, 8), (False, False): (64, 64, 4)}
#: The largest head dim the kernel takes, by dtype; other dtypes and larger dims are left to
#: maskc.clustering's torch computation (float32 operands at 256 would spill).
LARGEST_DIM = {torch.bfloat16: 256, torch.float16: 128, torch.float32: 128}


def _precision(device: torch.device) -> str:
    """tf32x3 where tensor cores take TF32 (Ampere on), else plain float32 products."""
    if interpreting() or device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return "ieee"
    return "tf32x3"


def bfloat16_pieces(directions: torch.Tensor) -> torch.Tensor:
    """(3, ...) bfloat16 hi, mid, lo with hi + mid + lo = `directions` in float32, exactly for normal
    values of ordinary size (each piece holds the next 8 significant bits of what the earlier ones
    left; below about 2^-100 the last piece would be subnormal, near float32's largest hi overflows)."""
    hi = directions.to(torch.bfloat16)
    rest = directions - hi  # float32 (or wider): the subtraction promotes, exactly
    mid = rest.to(torch.bfloat16)
    return torch.stack([hi, mid, (rest - mid).to(torch.bfloat16)])


def nearest_labels(x: torch.Tensor, directions: torch.Tensor, signed: bool) -> torch.Tensor | None:
    """maskc.clustering's `nearest_direction` by the kernel, or None for what it does not take (dtypes
    and head dims outside LARGEST_DIM): the registered entry point."""
    if x.shape[-1] > LARGEST_DIM.get(x.dtype, 0):
        return None
    return nearest_direction(x, directions, signed)


@torch.library.custom_op("maskc::nearest_direction", mutates_args=())
def nearest_direction(x: torch.Tensor, directions: torch.Tensor, signed: bool) -> torch.Tensor:
    """(G, P) int64 labels of x (G, P, D) against directions (G or 1, M, D): argmax over m of x·d_m,
    then (signed) of −x·d_m as labels M + m; ties to the lower label. Shapes as maskc.clustering
    checks them; x's dtype and D within LARGEST_DIM."""
    if x.dim() != 3 or x.shape[-1] > LARGEST_DIM.get(x.dtype, 0):
        raise BackendError(f"the label kernel takes (G, P, D) points with D at most {LARGEST_DIM} by dtype; got "
                           f"{tuple(x.shape)} {x.dtype}")  # fmt: skip
    groups, points, dim = x.shape
    count = directions.shape[1]
    labels = torch.empty(groups, points, dtype=torch.int64, device=x.device)
    if groups == 0 or points == 0:
        return labels
    x = x if x.stride(-1) == 1 else x.contiguous()
    pieced = x.dtype == torch.bfloat16
    padded = max(16, triton.next_power_of_2(dim))
    block_p, block_m, warps = _BLOCKS[(pieced, padded > 128)]
    pieces = bfloat16_pieces(directions) if pieced else directions.float().contiguous()[None]
    kernel = kernel_module("nearest", interpreting()).maskc_nearest_direction
    launch_kernel(kernel, (triton.cdiv(points, block_p), groups),
        x, pieces, labels,
        x.stride(0), x.stride(1), pieces.stride(0), pieces.stride(1) if directions.shape[0] > 1 else 0,
        pieces.stride(2), points, count,
        DIM=dim, PADDED_DIM=padded, BLOCK_P=block_p, BLOCK_M=min(block_m, max(16, triton.next_power_of_2(count))),
        SIGNED=signed, PIECES=3 if pieced else 1, PRECISION=_precision(x.device), UPCAST=interpreting(),
        num_warps=warps, num_stages=1,
    )  # fmt: skip
    return labels


@nearest_direction.register_fake
def _(x: torch.Tensor, directions: torch.Tensor, signed: bool) -> torch.Tensor:
    return x.new_empty(x.shape[:2], dtype=torch.int64)


register_kernel("nearest_direction", "cuda", nearest_labels)
