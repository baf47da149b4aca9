"""Launching the backward kernels (`kernels/backward.py`) of a plan, tuned per problem."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import torch

from . import descriptors
from .cache import interpreting
from .chunks import chunk_args, chunk_programs, launch_programs, merge_columns, workspace
from .forward import (
    HALF_ROWS,
    LOG2E,
    WS_CONSUMER_REGS,
    WS_MAX_REGS,
    check_in_place,
    descriptor_tiles,
    half_kinds_arg,
    processors,
    ws_descriptors,
    ws_eligible,
)
from .launching import launch_kernel
from .plan import Plan
from .runtime import CallInputs
from .span import Span
from .tables import WalkTables
from .tuning import KernelConfig, choose_config, dot_precision

#: dK/dV's computing groups hold dK and dV (128 registers a thread) besides a tile's scores: 240
#: registers each, the loading group keeping 24 of the 168 a thread (as FlashAttention-3's backward
#: does). ptxas (sm_90, Triton 3.6) spills 168 bytes at 232; at 240, with the rows' lse and delta read
#: from shared memory, 80 on the window and none of it inside the loop over full tiles.
WS_DKDV_CONSUMER_REGS = 240


def prepare_rows(
    plan: Plan, out: torch.Tensor, d_out: torch.Tensor, lse: torch.Tensor, d_lse: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta, lse in base 2 with −inf turned to +inf), both (B, H, N) float32."""
    batch, heads, n, value_dim = out.shape
    delta = torch.empty_like(lse)
    lse2 = torch.empty_like(lse)
    kernels = plan.kernels("backward")
    grid = (-(-n // kernels.PREPARE_ROWS), batch * heads)
    launch_kernel(kernels.maskc_backward_prepare, grid,
        out, d_out, lse if d_lse is None else d_lse, lse, delta, lse2,
        *out.stride()[:3], *d_out.stride()[:3],
        n, heads,
        BLOCK_M=kernels.PREPARE_ROWS, VALUE_DIM=value_dim, HAS_DLSE=d_lse is not None,
    )  # fmt: skip
    return delta, lse2


def _sum_chunks(
    kernels: ModuleType,
    tables: WalkTables,
    sums: Sequence[tuple[torch.Tensor, torch.Tensor, float]],
    heads: int,
    groups: int,
    rows: tuple,
    rows_map: tuple,
    block: int,
    per_batch: bool,
    accumulate: bool,
) -> None:
    """Each (grad, work, scale) of `sums` (one or two: dQ, or dK and dV): grad's long lines as the
    scaled sums of their chunks' partials in work, all in one launch; `rows` = (starts, start, length)
    of the positions grad holds, `rows_map` the rows they map to (the plan's row map of that side)."""
    (grad, work, scale), (grad2, work2, scale2) = sums[0], sums[-1]
    columns = merge_columns(grad.shape[-1], grad2.shape[-1])
    slices = sum(g.shape[-1] for g, _, _ in sums) // columns
    launch_kernel(kernels.maskc_sum_chunks, (tables.long_lines, groups, slices),
        grad, work, *grad.stride()[:3], scale, grad2, work2, *grad2.stride()[:3], scale2,
        tables.order, tables.chunk_ptr, heads, groups, *rows, rows_map,
        BLOCK=block, WIDTH=grad.shape[-1], WIDTH2=grad2.shape[-1], COLUMNS=columns, PER_BATCH=per_batch,
        ACCUMULATE=accumulate,
    )  # fmt: skip


def attention_backward(
    plan: Plan,
    d_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    d_lse: torch.Tensor | None,
    scale: float,
    span: Span | None = None,
    inputs: CallInputs | None = None,
    prepared: tuple[torch.Tensor, torch.Tensor] | None = None,
    into: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) in the inputs' dtypes; d_lse is the gradient of the returned lse, if any.

    `span` places a rectangular call's rows among the pattern's positions (all of them by default);
    `inputs` are the call's run-time tensors when the plan's layout is built per call. A pass of a
    schedule whose passes went on from one another (`attention_forward`'s `earlier`) takes the rows'
    terms `prepared` once from the final out and lse (`prepare_rows`), and adds its share of the
    gradients to the earlier passes' (`into`, updated in place and returned).
    """
    batch, heads, _, head_dim = q.shape
    kv_heads, value_dim = k.shape[1], v.shape[-1]
    span = span or Span.full(plan.n)
    delta, lse2 = prepared if prepared is not None else prepare_rows(plan, out, d_out, lse, d_lse)
    accumulate = into is not None
    if into is None:
        into = (torch.empty_like(q, memory_format=torch.contiguous_format),
                torch.empty_like(k, memory_format=torch.contiguous_format),
                torch.empty_like(v, memory_format=torch.contiguous_format))  # fmt: skip
    dq, dk, dv = into
    precision = dot_precision(q.dtype)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *d_out.stride()[:3])
    positions = span.kernel_args(q.device)
    q_map, k_map = plan.row_map_args()

    def run_dkdv(config: KernelConfig, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, add: bool) -> None:
        if config.ws:  # chosen only for calls it serves, as run_dq's
            launch_dkdv_ws(plan, config, (q, k, v, d_out), (dk, dv), (lse2, delta), scale, inputs)
            return
        check_in_place(plan, span)
        window = span.tile_window(config.block_m, config.block_n)
        launch = plan.launch_tables(
            "columns", config.block_m, config.block_n, q.device, heads, inputs, window and window[::-1]
        )
        tables, groups, block_n = launch.walk, batch * kv_heads, config.block_n
        chunks = chunk_programs(tables, groups)
        dk_work = workspace(chunks, block_n, head_dim, device=q.device)
        dv_work = workspace(chunks, block_n, value_dim, device=q.device)
        kernels = plan.kernels("backward")
        even = span.even(config.block_m, block_n)
        tma = descriptor_tiles(plan, config, even, (q, d_out), config.block_m)
        dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device) if config.atomic_dq else None
        # dQ's bulk reduction needs a descriptor too; Triton's interpreter has no descriptor reductions
        dq_desc = (
            descriptors.row_descriptors((dq_acc,), config.block_m)
            if tma is not None and dq_acc is not None and not interpreting()
            else None
        )
        launch_kernel(kernels.maskc_backward_dkdv, (launch_programs(tables, groups),),
            q, k, v, d_out, dk, dv, lse2, delta,
            *strides, *dk.stride()[:3], *dv.stride()[:3],
            *launch.kernel_args(),
            scale * LOG2E, scale, plan.n, heads, groups, kv_heads, tables.lines,
            tables.long_lines, tables.programs, *positions, plan.tile_mask(), launch.mask_args, q_map, k_map,
            *chunk_args(tables, groups), dk_work, dv_work, *(tma or (None, None)), dq_acc,
            *(dq_acc.stride()[:2] if dq_acc is not None else (0, 0)), dq_desc and dq_desc[0],
            GROUP=heads // kv_heads, BLOCK_M=config.block_m, BLOCK_N=block_n, HEAD_DIM=head_dim,
            VALUE_DIM=value_dim, EVEN_N=even, PER_BATCH_Q=span.q_starts is not None, PRECISION=precision,
            SPLIT=tables.split, TMA=tma is not None, ATOMIC_DQ=config.atomic_dq, TMA_DQ=bool(dq_desc),
            ACCUMULATE=add, num_warps=config.num_warps, num_stages=config.num_stages,
        )  # fmt: skip
        if tables.split:
            keys = (positions[0], span.k_start, span.k_end - span.k_start)
            sums = ((dk, dk_work, scale), (dv, dv_work, 1.0))
            _sum_chunks(kernels, tables, sums, kv_heads, groups, keys, k_map, block_n, False, add)
        if dq_acc is not None:
            (dq.add_ if add else dq.copy_)(dq_acc.mul_(scale))

    def run_dq(config: KernelConfig, dq: torch.Tensor, add: bool) -> None:
        if config.ws:  # chosen only for calls it serves: the tuner's key holds `ws_eligible`'s answer
            launch_dq_ws(plan, config, (q, k, v, d_out), dq, (lse2, delta), scale, inputs)
            return
        check_in_place(plan, span)
        window = span.tile_window(config.block_m, config.block_n)
        launch = plan.launch_tables("rows", config.block_m, config.block_n, q.device, heads, inputs, window)
        tables, groups, block_m = launch.walk, batch * heads, config.block_m
        dq_work = workspace(chunk_programs(tables, groups), block_m, head_dim, device=q.device)
        kernels = plan.kernels("backward")
        even = span.even(block_m, config.block_n)
        tma = descriptor_tiles(plan, config, even, (k, v), config.block_n)
        launch_kernel(kernels.maskc_backward_dq, (launch_programs(tables, groups),),
            q, k, v, d_out, dq, lse2, delta,
            *strides, *dq.stride()[:3],
            *launch.kernel_args(),
            scale * LOG2E, scale, plan.n, heads, heads // kv_heads, groups, tables.lines, tables.long_lines,
            tables.programs, *positions, plan.tile_mask(), launch.mask_args, q_map, k_map,
            *chunk_args(tables, groups), dq_work, *(tma or (None, None)),
            BLOCK_M=block_m, BLOCK_N=config.block_n, HEAD_DIM=head_dim, VALUE_DIM=value_dim,
            EVEN_N=even, PER_BATCH_Q=span.q_starts is not None, PRECISION=precision, SPLIT=tables.split,
            TMA=tma is not None, ACCUMULATE=add, num_warps=config.num_warps, num_stages=config.num_stages,
        )  # fmt: skip
        if tables.split:
            _sum_chunks(kernels, tables, [(dq, dq_work, scale)], heads, groups, positions[:3], q_map, block_m,
                        span.q_starts is not None, add)  # fmt: skip

    # the tuner times a pass that adds to `into` adding to zeros: adding to `into` again and again would spoil it
    def scratch() -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros_like(g) for g in into) if accumulate else into

    ws = (
        ws_eligible(plan, q, k, v, span, going_on=accumulate)
        and descriptors.descriptor_rows(d_out) is not None
        and descriptors.terms_readable(lse)
    )
    dq_config = choose_config(
        plan, "dq", q, k, lambda config: run_dq(config, torch.zeros_like(dq) if accumulate else dq, accumulate), ws=ws
    )

    def run_gradients(config: KernelConfig, grads: tuple[torch.Tensor, ...], add: bool) -> None:
        """dK and dV with `config`, and dQ: in the same kernel (atomic_dq) or by the dQ kernel after it,
        so that the tuner times both ways whole."""
        run_dkdv(config, *grads, add)
        if not config.atomic_dq:
            run_dq(dq_config, grads[0], add)

    config = choose_config(plan, "dkdv", q, k, lambda config: run_gradients(config, scratch(), accumulate), ws=ws)
    run_gradients(config, into, accumulate)
    return dq, dk, dv


def launch_dq_ws(
    plan: Plan,
    config: KernelConfig,
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    dq: torch.Tensor,
    rows: tuple[torch.Tensor, torch.Tensor],
    scale: float,
    inputs: CallInputs | None,
) -> None:
    """One launch of the warp-specialised dQ (`kernels/backward_ws.py`) writing dq from (q, k, v, dO) and
    the rows' (lse in base 2, delta), on a call `forward.ws_eligible` admits (not adding to a pass's);
    long rows as chunks where the tables split them, summed after."""
    q, k = tensors[:2]
    batch, heads, _, head_dim = q.shape
    launch = plan.launch_tables("rows", config.block_m, config.block_n, q.device, heads, inputs, None)
    tables, groups = launch.walk, batch * heads
    items = launch_programs(tables, groups)
    dq_work = workspace(chunk_programs(tables, groups), config.block_m, head_dim, device=q.device)
    halves, half_kinds = half_kinds_arg(plan, "rows", config, tables, q.device)
    launch_kernel(plan.kernels("backward_ws").maskc_backward_dq_ws, (min(items, processors(q.device)),),
        *ws_descriptors(tensors, config), *ws_descriptors((dq,), config, (HALF_ROWS,)), *rows,
        torch.zeros(1, dtype=torch.int32, device=q.device),
        *(stride for x in tensors for stride in x.stride()[:2]), *dq.stride()[:2],
        *launch.kernel_args(), halves,
        scale * LOG2E, scale, plan.n, heads, heads // k.shape[1], groups, tables.lines, tables.long_lines,
        items, plan.tile_mask(), launch.mask_args, *chunk_args(tables, groups), dq_work,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, HEAD_DIM=head_dim, STAGES=config.num_stages,
        CONSUMER_REGS=WS_CONSUMER_REGS, HALF_KINDS=half_kinds, SPLIT=tables.split, num_warps=config.num_warps,
        maxnreg=WS_MAX_REGS,
    )  # fmt: skip
    if tables.split:
        positions = Span.full(plan.n).kernel_args(q.device)
        _sum_chunks(plan.kernels("backward"), tables, [(dq, dq_work, scale)], heads, groups, positions[:3],
                    plan.row_map_args()[0], config.block_m, False, False)  # fmt: skip


def launch_dkdv_ws(
    plan: Plan,
    config: KernelConfig,
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    grads: tuple[torch.Tensor, torch.Tensor],
    rows: tuple[torch.Tensor, torch.Tensor],
    scale: float,
    inputs: CallInputs | None,
) -> None:
    """One launch of the warp-specialised dK/dV (`kernels/backward_ws.py`) writing (dk, dv) from
    (q, k, v, dO) and the rows' (lse in base 2, delta), on a call `forward.ws_eligible` admits: one
    persistent program per SM; long columns as chunks where the tables split them, summed after."""
    q, k = tensors[:2]
    (batch, heads, _, head_dim), kv_heads = q.shape, k.shape[1]
    launch = plan.launch_tables("columns", config.block_m, config.block_n, q.device, heads, inputs, None)
    tables, groups = launch.walk, batch * kv_heads
    items = launch_programs(tables, groups)
    works = [workspace(chunk_programs(tables, groups), config.block_n, head_dim, device=q.device) for _ in grads]
    dk, dv = grads
    halves, half_kinds = half_kinds_arg(plan, "columns", config, tables, q.device)
    launch_kernel(plan.kernels("backward_ws").maskc_backward_dkdv_ws, (min(items, processors(q.device)),),
        *ws_descriptors(tensors, config), *ws_descriptors((dk, dv), config, (HALF_ROWS, HALF_ROWS)),
        *descriptors.gluon_term_descriptors(rows, config.block_m), torch.zeros(1, dtype=torch.int32, device=q.device),
        *(stride for x in tensors for stride in x.stride()[:2]), *dk.stride()[:2], *dv.stride()[:2],
        *launch.kernel_args(), halves,
        scale * LOG2E, scale, plan.n, heads, kv_heads, heads // kv_heads, groups, tables.lines,
        tables.long_lines, items, plan.tile_mask(), launch.mask_args, *chunk_args(tables, groups), *works,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, HEAD_DIM=head_dim, STAGES=config.num_stages,
        CONSUMER_REGS=WS_DKDV_CONSUMER_REGS, HALF_KINDS=half_kinds, SPLIT=tables.split, num_warps=config.num_warps,
        maxnreg=WS_MAX_REGS,
    )  # fmt: skip
    if tables.split:
        keys = Span.full(plan.n).kernel_args(q.device)[:3]  # a full call's keys: every position, as its rows
        sums = ((dk, works[0], scale), (dv, works[1], 1.0))
        _sum_chunks(plan.kernels("backward"), tables, sums, kv_heads, groups, keys, plan.row_map_args()[1],
                    config.block_n, False, False)  # fmt: skip
