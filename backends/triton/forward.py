"""Launching the forward kernel (`forward_kernel.FORWARD_KERNEL`) of a plan, tuned per problem."""

from __future__ import annotations

import torch

from .forward_kernel import LOG2E
from .plan import Plan
from .runtime import CallInputs
from .tuning import KernelConfig, choose_config, dot_precision


def launch_forward(
    plan: Plan,
    config: KernelConfig,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor,
    inputs: CallInputs | None = None,
) -> None:
    """One launch of the forward kernel with `config`'s tile shape, writing out and lse."""
    batch, heads, n, head_dim = q.shape
    launch = plan.launch_tables("rows", config.block_m, config.block_n, q.device, heads, inputs)
    tables = launch.walk
    grid = (tables.lines * batch * heads,)
    plan.module().maskc_forward[grid](
        q, k, v, out, lse,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        *launch.kernel_args(),
        scale * LOG2E, n, heads, heads // k.shape[1], batch * heads, tables.lines, tables.long_lines,
        *launch.mask_values,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, HEAD_DIM=head_dim, VALUE_DIM=v.shape[-1],
        EVEN_N=n % config.block_m == 0 and n % config.block_n == 0, PRECISION=dot_precision(q.dtype),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip


def attention_forward(
    plan: Plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, inputs: CallInputs | None = None
) -> tuple:
    """(out, lse) for contiguous-last-dim q, k, v whose head dims are powers of two; `inputs` are the
    call's run-time tensors when the plan's layout is built per call."""
    batch, heads, n, _ = q.shape
    out = torch.empty((batch, heads, n, v.shape[-1]), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, heads, n), dtype=torch.float32, device=q.device)

    def run(config: KernelConfig) -> None:
        launch_forward(plan, config, q, k, v, scale, out, lse, inputs)

    config = choose_config(plan, "forward", q, k, run)
    run(config)
    return out, lse
