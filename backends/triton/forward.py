"""Launching the forward kernel (`kernels/forward.py`) of a plan, tuned per problem."""

from __future__ import annotations

import torch

from maskc.errors import BackendError

from . import descriptors
from .chunks import chunk_args, chunk_programs, launch_programs, merge_columns, workspace
from .launching import launch_kernel
from .plan import Plan
from .runtime import CallInputs
from .span import Span
from .tables import Walk, WalkTables
from .tuning import KernelConfig, choose_config, dot_precision

#: log2(e): the kernels work in base 2, so the score scale is folded with it (kernels.common.LOG2E).
LOG2E = 1.4426950408889634


def launch_forward(
    plan: Plan,
    config: KernelConfig,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor,
    span: Span,
    inputs: CallInputs | None = None,
    going_on: bool = False,
) -> None:
    """One launch of the forward kernel with `config`'s tile shape, writing out and lse (`going_on`:
    going on from the earlier passes' rows that out and lse hold)."""
    if config.ws:  # chosen only for calls it serves: the tuner's key holds `ws_eligible`'s answer
        launch_forward_ws(plan, config, (q, k, v), scale, (out, lse), inputs)
        return
    batch, heads, _, head_dim = q.shape
    check_in_place(plan, span)
    window = span.tile_window(config.block_m, config.block_n)
    launch = plan.launch_tables("rows", config.block_m, config.block_n, q.device, heads, inputs, window)
    tables = launch.walk
    groups, value_dim, block_m = batch * heads, v.shape[-1], config.block_m
    works = forward_workspaces(chunk_programs(tables, groups), block_m, value_dim, q.device)
    kernels = plan.kernels("forward")
    positions = span.kernel_args(q.device)
    even = span.even(block_m, config.block_n)
    tma = descriptor_tiles(plan, config, even, (k, v), config.block_n)
    q_map, k_map = plan.row_map_args()
    launch_kernel(kernels.maskc_forward, (launch_programs(tables, groups),),
        q, k, v, out, lse,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        *launch.kernel_args(),
        scale * LOG2E, plan.n, heads, heads // k.shape[1], groups, tables.lines, tables.long_lines,
        tables.programs, *positions, plan.tile_mask(), launch.mask_args, q_map, k_map,
        *chunk_args(tables, groups), *works, *(tma or (None, None)),
        BLOCK_M=block_m, BLOCK_N=config.block_n, HEAD_DIM=head_dim, VALUE_DIM=value_dim,
        EVEN_N=even, PER_BATCH_Q=span.q_starts is not None,
        PRECISION=dot_precision(q.dtype), SPLIT=tables.split, TMA=tma is not None, CONTINUE=going_on,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    if tables.split:
        merge_long_rows(plan, tables, (out, lse), works, span, heads, block_m, going_on)


def forward_workspaces(
    chunks: int, block_m: int, value_dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chunks' float32 partials of the online softmax: (acc, m, l), one [block_m] piece per chunk."""
    return (
        workspace(chunks, block_m, value_dim, device=device),
        workspace(chunks, block_m, device=device),
        workspace(chunks, block_m, device=device),
    )


def merge_long_rows(
    plan: Plan,
    tables: WalkTables,
    outputs: tuple[torch.Tensor, torch.Tensor],
    works: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    span: Span,
    heads: int,
    block_m: int,
    going_on: bool,
) -> None:
    """(out, lse) of the long rows from their chunks' partials (`kernels.forward.maskc_forward_merge`),
    one program per (long row, batch·head, slice of its columns)."""
    out, lse = outputs
    groups, width = out.shape[0] * heads, out.shape[-1]
    columns = width if going_on else merge_columns(width)  # going on reads what other slices write
    launch_kernel(plan.kernels("forward").maskc_forward_merge, (tables.long_lines, groups, width // columns),
        out, lse, *works, *out.stride()[:3], tables.order, tables.chunk_ptr, heads, groups,
        *span.kernel_args(out.device)[:3], plan.row_map_args()[0], BLOCK_M=block_m, VALUE_DIM=width,
        COLUMNS=columns, PER_BATCH_Q=span.q_starts is not None, CONTINUE=going_on, num_warps=8 if going_on else 4,
    )  # fmt: skip


def launch_forward_ws(
    plan: Plan,
    config: KernelConfig,
    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    scale: float,
    outputs: tuple[torch.Tensor, torch.Tensor],
    inputs: CallInputs | None,
) -> None:
    """One launch of the warp-specialised forward (`kernels/forward_ws.py`) writing (out, lse) on a
    call `ws_eligible` admits: one persistent program per SM (at most one per work item); long rows
    as chunks where the tables split them, merged after (`merge_long_rows`)."""
    (q, k, v), (out, lse) = qkv, outputs
    batch, heads, _, head_dim = q.shape
    launch = plan.launch_tables("rows", config.block_m, config.block_n, q.device, heads, inputs, None)
    tables = launch.walk
    groups = batch * heads
    items = launch_programs(tables, groups)
    works = forward_workspaces(chunk_programs(tables, groups), config.block_m, head_dim, q.device)
    halves, half_kinds = half_kinds_arg(plan, "rows", config, tables, q.device)
    kernels = plan.kernels("forward_ws")
    launch_kernel(kernels.maskc_forward_ws, (min(items, processors(q.device)),),
        *ws_descriptors(qkv, config), *ws_descriptors((out,), config, (HALF_ROWS,)), lse,
        torch.zeros(1, dtype=torch.int32, device=q.device),
        *q.stride()[:2], *k.stride()[:2], *v.stride()[:2], *out.stride()[:2],
        *launch.kernel_args(), halves,
        scale * LOG2E, plan.n, heads, heads // k.shape[1], groups, tables.lines, tables.long_lines, items,
        plan.tile_mask(), launch.mask_args, *chunk_args(tables, groups), *works,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, HEAD_DIM=head_dim, STAGES=config.num_stages,
        CONSUMER_REGS=WS_CONSUMER_REGS, OVERLAP=config.overlap, HALF_KINDS=half_kinds, SPLIT=tables.split,
        num_warps=config.num_warps, maxnreg=WS_MAX_REGS,
    )  # fmt: skip
    if tables.split:
        merge_long_rows(plan, tables, outputs, works, Span.full(plan.n), heads, config.block_m, going_on=False)


def half_kinds_arg(
    plan: Plan, walk: Walk, config: KernelConfig, tables: WalkTables, device: torch.device
) -> tuple[torch.Tensor, bool]:
    """The warp-specialised kernels' `partial_halves` argument and HALF_KINDS flag: a static layout's
    halves' kinds where `config` reads them (`Plan.half_kinds`), else the partial indices standing in,
    never read (a run-time layout has no halves' kinds)."""
    halves = plan.half_kinds(walk, config.block_m, config.block_n, device) if config.halves else None
    return (tables.partial_idx, False) if halves is None else (halves, True)


#: Rows a computing partition of the warp-specialised kernels stores at once: its half of a 128-row
#: tile (kernels/forward_ws.py's GROUP_ROWS), so outputs and gradients take descriptors of this block.
HALF_ROWS = 64


def ws_descriptors(
    tensors: tuple[torch.Tensor, ...], config: KernelConfig, blocks: tuple[int, ...] | None = None
) -> list:
    """Gluon descriptors of (q, k, v) or (q, k, v, dO) in the tiles the warp-specialised kernels load:
    query and dO tiles of block_m rows, key and value tiles of block_n (or `blocks`' rows: outputs and
    gradients, stored in 64-row halves)."""
    blocks = blocks or (config.block_m, config.block_n, config.block_n, config.block_m)[: len(tensors)]
    descs = descriptors.gluon_row_descriptors(tensors, blocks)
    if descs is None:
        raise BackendError("the warp-specialised kernels need q, k, v (and dO) a tensor descriptor can read")
    return descs


#: Registers of the warp-specialised kernels (forward and dQ): 168 a thread over their three warp
#: groups (65,536 an SM, one program an SM), moved to the two computing groups (232 each) from the
#: loading one (40).
WS_MAX_REGS = 168
WS_CONSUMER_REGS = 232


def ws_eligible(plan: Plan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, span: Span, going_on: bool) -> bool:
    """Whether the warp-specialised kernels serve this call (the backward's also need dO a tensor
    descriptor can read): full-length, on whole 128-row tiles, in
    token order (no pass read in place), starting its rows (not going on from earlier passes'), 16-bit
    q, k, v with one head dim of 64 or 128 that tensor descriptors can read."""
    head_dim = q.shape[-1]
    return (
        span.is_full
        and span.even(128, 128)
        and not plan.mapped
        and not going_on
        and q.dtype in (torch.bfloat16, torch.float16)
        and q.dtype == k.dtype == v.dtype
        and head_dim in (64, 128)
        and k.shape[-1] == v.shape[-1] == head_dim
        and all(descriptors.descriptor_rows(x) is not None for x in (q, k, v))
    )


PROCESSORS_BY_DEVICE: dict[torch.device, int] = {}


def processors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (asked once per device)."""
    if device not in PROCESSORS_BY_DEVICE:
        PROCESSORS_BY_DEVICE[device] = torch.cuda.get_device_properties(device).multi_processor_count
    return PROCESSORS_BY_DEVICE[device]


def descriptor_tiles(
    plan: Plan, config: KernelConfig, even: bool, tensors: tuple[torch.Tensor, ...], rows: int
) -> list | None:
    """The tensor descriptors of a TMA configuration's walked tiles, or None: pointer loads (calls not on
    whole tiles, tensors a descriptor cannot read, and passes read in place, whose rows are not one
    descriptor's tiles)."""
    if not (config.tma and even) or plan.mapped:
        return None
    return descriptors.row_descriptors(tensors, rows)


def check_in_place(plan: Plan, span: Span) -> None:
    """A plan whose rows are read in place (`Plan.read_in_place`) runs full-length calls only."""
    if plan.mapped and not span.is_full:
        raise BackendError("a pass read in place (an order of axes) runs full-length calls only")


def attention_forward(
    plan: Plan,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    span: Span | None = None,
    inputs: CallInputs | None = None,
    earlier: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple:
    """(out, lse) for contiguous-last-dim q, k, v whose head dims are powers of two.

    `span` places a rectangular call's rows among the pattern's positions (all of them by default);
    `inputs` are the call's run-time tensors when the plan's layout is built per call. `earlier`:
    the (out, lse) of a schedule's earlier passes, in token order, which this pass goes on from and
    updates in place (the pairs of the passes must be disjoint).
    """
    batch, heads, m, _ = q.shape
    span = span or Span.full(plan.n)
    if earlier is None:
        out = torch.empty((batch, heads, m, v.shape[-1]), dtype=q.dtype, device=q.device)
        lse = torch.empty((batch, heads, m), dtype=torch.float32, device=q.device)
    else:
        out, lse = earlier

    def run(config: KernelConfig) -> None:
        launch_forward(plan, config, q, k, v, scale, out, lse, span, inputs, going_on=earlier is not None)

    def tune(config: KernelConfig) -> None:
        """The launch that goes on, timed on rows that hold no key yet: not on out and lse, which every
        timing would go on from again."""
        empty = torch.zeros_like(out), torch.full_like(lse, float("-inf"))
        launch_forward(plan, config, q, k, v, scale, *empty, span, inputs, going_on=True)

    ws = ws_eligible(plan, q, k, v, span, going_on=earlier is not None)
    config = choose_config(plan, "forward", q, k, run if earlier is None else tune, ws=ws)
    run(config)
    return out, lse
