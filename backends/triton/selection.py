"""Top-k block selection on the GPU in one kernel (`kernels/select.py`), offered to maskc.selection.

`select_top(scores, count, causal)` selects, per row of (G, nb, nb) float32 block scores, the
`count` best candidate key blocks (ties to the lower block, NaN as −inf, J ≤ I when causal): the
selection maskc.selection defines with a stable sort, found here without sorting or writing the
ranks. `select_top_blocks` is registered for CUDA tensors (`maskc.registry.register_kernel`), so
the Triton backend's calls and the CPU reference resolving the same CUDA tensors select alike;
rows longer than LARGEST_BLOCKS are left to torch. A torch op, so torch.compile keeps it whole.
"""

from __future__ import annotations

import torch
import triton

from maskc.errors import BackendError
from maskc.registry import register_kernel

from .cache import interpreting
from .kernels import kernel_module
from .launching import launch_kernel

#: The most key blocks per row the kernel takes (a row is held in registers).
LARGEST_BLOCKS = 4096
#: Scores per program: rows × padded row length.
_TILE = 4096


def select_top_blocks(scores: torch.Tensor, count: int, causal: bool) -> torch.Tensor | None:
    """maskc.selection's selection of (..., nb, nb) scores as bool; None (torch selects) for scores
    the kernel does not take: not float32, not square, or rows past LARGEST_BLOCKS."""
    square = scores.dim() >= 2 and scores.shape[-1] == scores.shape[-2]
    if scores.dtype != torch.float32 or not square or scores.shape[-1] > LARGEST_BLOCKS:
        return None
    flat = scores.reshape(-1, *scores.shape[-2:])
    return select_top(flat, count, causal).view(torch.bool).view(scores.shape)


@torch.library.custom_op("maskc::select_top", mutates_args=())
def select_top(scores: torch.Tensor, count: int, causal: bool) -> torch.Tensor:
    """(G, nb, nb) int8: per row of float32 scores (G, nb, nb), the `count` best candidates."""
    if scores.dim() != 3 or scores.shape[1] != scores.shape[2] or scores.dtype != torch.float32:
        raise BackendError(f"select_top takes (G, nb, nb) float32 scores; got {tuple(scores.shape)} {scores.dtype}")
    if count < 1:
        raise BackendError(f"select_top keeps at least one block per row; got count={count}")
    groups, blocks, _ = scores.shape
    if blocks > LARGEST_BLOCKS:
        raise BackendError(f"select_top takes rows of at most {LARGEST_BLOCKS} blocks; got {blocks}")
    selected = torch.empty(scores.shape, dtype=torch.int8, device=scores.device)
    if selected.numel() == 0:
        return selected
    padded = max(16, triton.next_power_of_2(blocks))
    rows = max(1, _TILE // padded)
    kernel = kernel_module("select", interpreting()).maskc_select_top
    launch_kernel(kernel, (groups, triton.cdiv(blocks, rows)),  # groups on axis 0: axes 1 and 2 stop at 65,535
        scores.contiguous(), selected, blocks, min(count, blocks),
        CAUSAL=causal, PADDED=padded, ROWS=rows, num_warps=4,
    )  # fmt: skip
    return selected


@select_top.register_fake
def _(scores: torch.Tensor, count: int, causal: bool) -> torch.Tensor:
    return scores.new_empty(scores.shape, dtype=torch.int8)


register_kernel("select_top", "cuda", select_top_blocks)
