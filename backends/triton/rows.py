"""Row permutations as one torch op, `maskc::permute_rows`, with its gradient (the inverse permutation).

y = permute_rows(x, order, inverse) holds y[b, h, p] = x[b, h, order[b, h, p]] for x (B, H, N, D);
`inverse` is order's inverse (inverse[order[p]] = p), which the gradient applies: the gradient of
a permutation is the inverse permutation of the incoming gradient, a copy, where torch's gather
would add into zeros with a scatter. One Triton kernel (`kernels/rows.py`) copies whole rows. An
op, so that torch.compile keeps it whole and CUDA graphs capture it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton

from maskc.errors import BackendError

from .cache import interpreting
from .kernels import kernel_module
from .launching import launch_kernel

#: Rows per program.
BLOCK_R = 64


def row_copies_enabled() -> bool:
    """Whether cluster order permutes rows with this op (MASKC_TRITON_ROW_COPIES, default 1) or with
    torch's gather (q, k, v by their orders, the output by its inverse; the gradients by scatter-adds),
    for comparisons in one run. Read per eager call; a torch.compile'd function keeps the mode it was
    traced with."""
    return os.environ.get("MASKC_TRITON_ROW_COPIES", "1") != "0"


def permuted(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """`permute_rows(x, order, inverse)`, or the same rows by torch's gather when row copies are off."""
    if row_copies_enabled():
        return permute_rows(x, order, inverse)
    if x.dim() != 4 or order.shape != x.shape[:3]:
        raise BackendError(f"rows of x (B, H, N, D) take an order (B, H, N); got {tuple(x.shape)} and "
                           f"{tuple(order.shape)}")  # fmt: skip
    return x.gather(2, order.long()[..., None].expand(*order.shape, x.shape[-1]))


def inverse_order(order: torch.Tensor) -> torch.Tensor:
    """The inverse of permutations along the last dim: inverse[..., order[..., p]] = p."""
    positions = torch.arange(order.shape[-1], device=order.device, dtype=order.dtype).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order.long(), positions)


@torch.library.custom_op("maskc::permute_rows", mutates_args=())
def permute_rows(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """x (B, H, N, D) with its rows in `order` (B, H, N), a permutation of 0 … N − 1 per (batch, head);
    `inverse` is its inverse (for the gradient). Contiguous (B, H, N, D) out."""
    if x.dim() != 4 or order.shape != x.shape[:3] or inverse.shape != order.shape:
        raise BackendError(f"permute_rows takes x (B, H, N, D) and orders (B, H, N); got {tuple(x.shape)}, "
                           f"{tuple(order.shape)} and {tuple(inverse.shape)}")  # fmt: skip
    batch, heads, rows, dim = x.shape
    x = x if x.stride(-1) == 1 else x.contiguous()
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    kernel = kernel_module("rows", interpreting()).maskc_permute_rows
    launch_kernel(kernel, (triton.cdiv(rows, BLOCK_R), batch * heads),
        x, order.contiguous(), y, x.stride(0), x.stride(1), x.stride(2), heads, rows,
        DIM=dim, PADDED_DIM=triton.next_power_of_2(dim), BLOCK_R=BLOCK_R, num_warps=4,
    )  # fmt: skip
    return y


@permute_rows.register_fake
def _(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    _, order, inverse = inputs
    ctx.save_for_backward(order, inverse)


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
    order, inverse = ctx.saved_tensors
    return permute_rows(grad, inverse, order), None, None


permute_rows.register_autograd(_backward, setup_context=_setup)
