"""Launching the decoding kernels (`kernels/decode.py`) of a plan: split-KV, then the merge."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .forward import LOG2E
from .launching import launch_kernel
from .tuning import dot_precision

if TYPE_CHECKING:
    from .plan import Plan


#: Slots per tile of the split kernel.
BLOCK_N = 64
#: Programs the split kernel aims for: enough to fill a large GPU (132 SMs) about twice.
TARGET_PROGRAMS = 264


def split_count(batch_kv_heads: int, slots: int) -> int:
    """Shares of the slots per (sequence, KV head): enough programs for the GPU, at least a tile each."""
    tiles = max(1, -(-slots // BLOCK_N))
    return max(1, min(tiles, -(-TARGET_PROGRAMS // batch_kv_heads)))


def decode_attention(
    plan: Plan,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    positions: torch.Tensor,
    q_positions: torch.Tensor,
    slot_counts: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, m, Dv), lse (B, H, m) float32) of q over the slots [0, slot_counts[b]) of k and v.

    q, k, v have power-of-two head dims and a contiguous last dim; positions (B, slots) int32 (−1:
    empty), q_positions (B,) int32: the position of each sequence's first query; scale > 0.
    """
    batch, heads, q_len, head_dim = q.shape
    kv_heads, slots, value_dim = k.shape[1], k.shape[2], v.shape[-1]
    group = heads // kv_heads
    rows = max(16, triton_next_power_of_2(group * q_len))
    splits = split_count(batch * kv_heads, slots)
    per_split = -(-slots // splits)
    per_split = -(-per_split // BLOCK_N) * BLOCK_N
    splits = -(-slots // per_split)
    out_part = torch.empty((batch, heads, q_len, splits, value_dim), dtype=torch.float32, device=q.device)
    lse_part = torch.empty((batch, heads, q_len, splits), dtype=torch.float32, device=q.device)
    kernels = plan.kernels("decode")
    launch_kernel(kernels.maskc_decode_split, (batch * kv_heads, splits),
        q, k, v, positions, q_positions, slot_counts, out_part, lse_part,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], positions.stride(0),
        plan.head_layout(q.device, heads), scale * LOG2E, plan.n, heads, kv_heads, q_len, per_split, splits,
        plan.tile_mask(), plan.mask_args(q.device),
        GROUP=group, ROWS=rows, BLOCK_N=BLOCK_N, HEAD_DIM=head_dim, VALUE_DIM=value_dim,
        ONE_LAYOUT=len(plan.rules) == 1, PRECISION=dot_precision(q.dtype),
        num_warps=kernels.SPLIT_WARPS, num_stages=kernels.SPLIT_STAGES,
    )  # fmt: skip
    out = torch.empty((batch, heads, q_len, value_dim), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, q_len), dtype=torch.float32, device=q.device)
    launch_kernel(kernels.maskc_decode_merge, (batch * heads * q_len,),
        out_part, lse_part, out, lse, splits, SPLITS=max(2, triton_next_power_of_2(splits)), VALUE_DIM=value_dim,
    )  # fmt: skip
    return out, lse


def triton_next_power_of_2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()
