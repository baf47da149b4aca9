"""`maskc.distributed.attention`: a compiled pattern on a sequence split over the ranks of a group.

Each rank receives, by the plan, only the keys its queries read, runs one local attention call
per (query range, key piece) of its plan and merges the partial outputs by log-sum-exp. The
whole step is one autograd Function: its forward records the local calls and the merge with
autograd (the backends' outputs and lse are exactly differentiable), and its backward replays
that record for dQ, dK, dV of the local and received keys, then sends the received keys'
gradients back to their owners. Rows the plan ships to key owners come back as partial outputs
merged like the others; in the backward pass their gradients go to the hosts, which replay their
part of the record and return the rows' dQ. Every rank enters each backward exchange exactly
once, whatever its own queries read.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from maskc.distributed.comm import (
    Group,
    Pending,
    Piece,
    add_key_gradients,
    exchange_partials,
    local_slice,
    pieces_of,
    return_query_gradients,
    send_key_gradients,
    start_exchange,
)
from maskc.distributed.local import Job, local_attention, merge
from maskc.distributed.planner import Block, Plan, Shipment, plan
from maskc.distributed.ring import RingAttention, ring_forward
from maskc.distributed.sharding import check_sharding, shard, unshard
from maskc.errors import BackendError
from maskc.ir import CompiledPattern

#: Plans per pattern object, by (ranks, sharding, mode, max_held_keys).
_plans: weakref.WeakKeyDictionary[CompiledPattern, dict[tuple, Plan]] = weakref.WeakKeyDictionary()


def cached_plan(
    pattern: CompiledPattern, ranks: int, sharding: str, mode: str = "auto", max_held_keys: int | None = None
) -> Plan:
    """The plan of `pattern` over `ranks` ranks, computed once per pattern object."""
    per_pattern = _plans.setdefault(pattern, {})
    key = (ranks, sharding, mode, max_held_keys)
    if key not in per_pattern:
        per_pattern[key] = plan(pattern, ranks, sharding, mode, max_held_keys)
    return per_pattern[key]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: CompiledPattern,
    group: dist.ProcessGroup | None = None,
    sharding: str = "contiguous",
    *,
    scale: float | None = None,
    return_lse: bool = False,
    backend: str = "auto",
    mode: str = "auto",
    max_held_keys: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """This rank's output shard of sparse attention over a sequence split across `group`.

    q: (B, H, N/P, D), k, v: (B, Hkv, N/P, D): this rank's shards (`shard(x, rank, P, sharding)`)
    of tensors over the whole sequence; `pattern` is compiled for the whole N. Returns the
    output shard (and its lse shard, (B, H, N/P), when return_lse is true); differentiable.
    `backend` picks the local calls' backend as in `maskc.attention` ("auto": Triton for CUDA
    tensors, with NCCL; the CPU reference for CPU tensors, with gloo). `mode` picks how keys move
    ("halo", "ring", or "auto": the planner's choice, see `maskc.distributed.planner`);
    `max_held_keys`, the same on every rank, keeps halos where they hold at most that many
    received keys at once.
    """
    job = _job(q, k, v, pattern, group, sharding, scale, backend, (mode, max_held_keys))
    if job.plan.mode == "ring":
        if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
            out, lse = RingAttention.apply(q, k, v, job)
        else:
            out, lse = ring_forward(job, q, k, v)
            out = out.to(q.dtype)
    elif torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        out, lse = ContextParallelAttention.apply(q, k, v, job)
    else:
        record = _run(job, q, k, v, track=False)
        out, lse = record.out, record.lse
    return (out, lse) if return_lse else out


def _job(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Any,
    group: Any,
    sharding: str,
    scale: Any,
    backend: str,
    how: tuple[str, int | None],
) -> Job:
    check_sharding(sharding)
    if not dist.is_available() or not dist.is_initialized():
        raise BackendError("maskc.distributed.attention needs torch.distributed initialized (init_process_group)")
    if not isinstance(pattern, CompiledPattern):
        raise BackendError(f"pattern is a {type(pattern).__name__}, not a CompiledPattern (use maskc.compile)")
    members = Group.of(group)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise BackendError(f"{name} must be a 4-D tensor (batch, heads, seq_len / ranks, head_dim)")
        if x.shape[2] * members.size != pattern.n:
            raise BackendError(
                f"{name} holds {x.shape[2]} positions per rank; pattern {pattern.spec.name!r} is compiled for "
                f"seq_len {pattern.n}, which over {members.size} ranks is {pattern.n / members.size:g} per rank"
            )
    return Job(cached_plan(pattern, members.size, sharding, *how), members, pattern, scale, backend)


@dataclass
class Record:
    """What the forward pass recorded with autograd, for the backward pass to replay."""

    out: torch.Tensor
    lse: torch.Tensor
    #: Received keys and values (leaves).
    received: list
    #: Hosted query rows (leaves) with the partial output and lse computed from them.
    hosted: list[tuple[Shipment, torch.Tensor, torch.Tensor, torch.Tensor]]
    #: Partial outputs and lse of this rank's shipped rows, as received (leaves).
    partials: list[tuple[Shipment, torch.Tensor, torch.Tensor]]
    #: The query rows of each call on received keys, as leaves of their own, so that the backward
    #: pass differentiates those calls first and sends the keys' gradients before the local calls.
    remote_queries: list[tuple[Block, torch.Tensor]]


class ContextParallelAttention(torch.autograd.Function):
    """Forward: exchange, local calls, merge (recorded with autograd). Backward: replay the record,
    then return the received keys' gradients to their owners."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, job: Job) -> Any:
        ctx.set_materialize_grads(False)
        with torch.enable_grad():
            leaves = [x.detach().requires_grad_() for x in (q, k, v)]
            record = _run(job, *leaves, track=True)
        ctx.job, ctx.leaves, ctx.record = job, leaves, record
        return record.out.detach(), record.lse.detach()

    @staticmethod
    def backward(ctx: Any, d_out: torch.Tensor | None, d_lse: torch.Tensor | None) -> Any:
        job: Job = ctx.job
        record: Record = ctx.record
        leaves = ctx.leaves
        del ctx.record, ctx.leaves
        outputs, grads = [record.out], [torch.zeros_like(record.out) if d_out is None else d_out]
        if d_lse is not None:
            outputs.append(record.lse)
            grads.append(d_lse)
        keys = [b for _, kb, vb in record.received for b in (kb, vb)]
        partials = [b for _, ob, lb in record.partials for b in (ob, lb)]
        remote = [leaf for _, leaf in record.remote_queries]
        # first the calls on received keys, whose key gradients go home while the local calls are differentiated
        found = _grads(outputs, keys + partials + remote, grads, retain=True) if keys + partials + remote else []
        key_grads = [(t, found[2 * i], found[2 * i + 1]) for i, (t, _, _) in enumerate(record.received)]
        returning = send_key_gradients(job.plan, job.group, key_grads, leaves[1], leaves[2])
        found = found[len(keys) :]
        sent = [(s, found[2 * i], found[2 * i + 1]) for i, (s, _, _) in enumerate(record.partials)]
        pending = exchange_partials(job.plan, job.group, sent, record.out, record.lse, backward=True)
        dq, dk, dv = _grads(outputs, leaves, grads, retain=bool(record.hosted))
        for (block, _), grad in zip(record.remote_queries, found[len(partials) :]):
            _rows(dq, block.q_start, block.q_stop, job.plan.rank_plans[job.group.rank].ranges).add_(grad)
        pending.wait()
        query_grads = []
        if record.hosted:
            hosted_out = [x for _, _, out, lse in record.hosted for x in (out, lse)]
            hosted_grads = [g for _, d_out_p, d_lse_p in pending.received for g in (d_out_p, d_lse_p)]
            rows = [qb for _, qb, _, _ in record.hosted]
            *d_rows, dk_hosted, dv_hosted = _grads(hosted_out, [*rows, leaves[1], leaves[2]], hosted_grads)
            dk, dv = dk + dk_hosted, dv + dv_hosted
            query_grads = [(s, g) for (s, _, _, _), g in zip(record.hosted, d_rows)]
        return_query_gradients(job.plan, job.group, query_grads, dq)
        add_key_gradients(job.plan, job.group, returning, dk, dv)
        return dq, dk, dv, None


def _grads(
    outputs: list[torch.Tensor], inputs: list[torch.Tensor], grads: list[torch.Tensor], retain: bool = False
) -> list[torch.Tensor]:
    """Gradients of the inputs (zeros for those the outputs do not use, as when a rank's rows read no key)."""
    used = [(out, grad) for out, grad in zip(outputs, grads) if out.requires_grad]
    if not used:
        return [torch.zeros_like(x) for x in inputs]
    used_outputs, used_grads = zip(*used)
    found = torch.autograd.grad(used_outputs, inputs, used_grads, allow_unused=True, retain_graph=retain)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, found)]


def simulate(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: CompiledPattern,
    ranks: int,
    sharding: str = "contiguous",
    *,
    scale: float | None = None,
    only_rank: int | None = None,
    backend: str = "auto",
    mode: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's local calls and merges of the plan, run in this process on full-length tensors
    (no torch.distributed): (out, lse) over the whole sequence, differentiable by plain autograd.

    It checks a plan's calls on one device, and with `only_rank` runs (and returns the output
    shard of) one rank's compute alone, for timing it without communication.
    """
    check_sharding(sharding)
    plan_all = cached_plan(pattern, ranks, sharding, mode)
    job = Job(plan_all, Group(None, 0, ranks, tuple(range(ranks))), pattern, scale, backend)
    outs, lses = [], []
    for rank in range(ranks) if only_rank is None else [only_rank]:
        here = job.plan.rank_plans[rank]
        blocks = here.blocks + [block for s in plan_all.shipped(rank) for block in s.blocks]
        pieces = [
            Piece(b.k_start, b.k_stop, b.source, k[:, :, b.k_start : b.k_stop], v[:, :, b.k_start : b.k_stop])
            for b in blocks
        ]
        q_shard = shard(q, rank, ranks, sharding)
        results = [(block, *_call(job, q_shard, here.ranges, pieces, block)) for block in blocks]
        out, lse = zip(*(_assemble(q_shard, v.shape[3], a, b, results) for a, b in here.ranges))
        outs.append(torch.cat(out, dim=2))
        lses.append(torch.cat(lse, dim=2))
    if only_rank is not None:
        return outs[0], lses[0]
    return unshard(outs, sharding), unshard(lses, sharding)


def _run(job: Job, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, track: bool) -> Record:
    """Post the exchange, compute on local keys, host other ranks' shipped rows, then compute on
    received keys and merge everything, shipped rows' partial outputs included."""
    rank = job.group.rank
    here = job.plan.rank_plans[rank]
    pending: Pending = start_exchange(job.plan, job.group, q.detach(), k.detach(), v.detach())
    if track:
        pending.received = [(t, kb.requires_grad_(), vb.requires_grad_()) for t, kb, vb in pending.received]
        pending.guests = [(s, qb.requires_grad_()) for s, qb in pending.guests]
    local = here.ranges
    pieces = [Piece(a, b, rank, *(_rows(x, a, b, local) for x in (k, v))) for a, b in local]
    results = [(block, *_call(job, q, local, pieces, block)) for block in here.blocks if block.source == rank]
    pending.wait()
    hosted = _host(job, pending.guests, pieces, v.shape[3])
    like_out = q.new_empty((q.shape[0], q.shape[1], 0, v.shape[3]))
    like_lse = q.new_empty((q.shape[0], q.shape[1], 0), dtype=_lse_dtype(q))
    computed = [(s, out.detach(), lse.detach().to(like_lse.dtype)) for s, _, out, lse in hosted]
    partial_pending = exchange_partials(job.plan, job.group, computed, like_out, like_lse)
    pieces += pieces_of(pending.received)
    remote = [
        (block, _rows(q, block.q_start, block.q_stop, local).detach().requires_grad_(track))
        for block in here.blocks
        if block.source != rank
    ]
    results += [(block, *_call(job, rows, [(block.q_start, block.q_stop)], pieces, block)) for block, rows in remote]
    partial_pending.wait()
    partials = partial_pending.received
    if track:
        partials = [(s, ob.requires_grad_(), lb.requires_grad_()) for s, ob, lb in partials]
    results += [result for s, ob, lb in partials for result in _shipped_results(s, ob, lb)]
    outs, lses = zip(*(_assemble(q, v.shape[3], a, b, results) for a, b in local))
    return Record(torch.cat(outs, dim=2), torch.cat(lses, dim=2), pending.received, hosted, partials, remote)


def _host(job: Job, guests: list[tuple[Shipment, torch.Tensor]], pieces: list[Piece], value_dim: int) -> list:
    """Partial output and lse of each hosted shipment's rows over this rank's keys."""
    hosted = []
    for s, rows in guests:
        found = [(block, *_call(job, rows, list(s.ranges), pieces, block)) for block in s.blocks]
        out, lse = zip(*(_assemble(rows, value_dim, a, b, found) for a, b in s.ranges))
        hosted.append((s, rows, torch.cat(out, dim=2), torch.cat(lse, dim=2)))
    return hosted


def _shipped_results(s: Shipment, out: torch.Tensor, lse: torch.Tensor) -> list:
    """A shipment's returned partial output cut into one result per position range, to be merged."""
    results, offset = [], 0
    for a, b in s.ranges:
        results.append(
            (Block(a, b, 0, 0, s.dst), out[:, :, offset : offset + b - a], lse[:, :, offset : offset + b - a])
        )
        offset += b - a
    return results


def _lse_dtype(q: torch.Tensor) -> torch.dtype:
    """The lse dtype of local calls: float64 for float64 inputs (the CPU reference), float32 otherwise."""
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _call(
    job: Job, q: torch.Tensor, local: list[tuple[int, int]], pieces: list[Piece], block: Block
) -> tuple[torch.Tensor, torch.Tensor]:
    piece = next(p for p in pieces if p.start <= block.k_start and block.k_stop <= p.stop and p.source == block.source)
    keys = slice(block.k_start - piece.start, block.k_stop - piece.start)
    queries = _rows(q, block.q_start, block.q_stop, local)
    return local_attention(queries, piece.k[:, :, keys], piece.v[:, :, keys], job, block.q_start, block.k_start)


def _rows(x: torch.Tensor, start: int, stop: int, local: list[tuple[int, int]]) -> torch.Tensor:
    """The rows of shard x at global positions [start, stop)."""
    return x[:, :, slice(*local_slice(start, stop, local))]


def _assemble(
    q: torch.Tensor,
    value_dim: int,
    start: int,
    stop: int,
    results: list[tuple[Block, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and lse of queries [start, stop), merging the partial results of their blocks."""
    mine = [r for r in results if start <= r[0].q_start and r[0].q_stop <= stop]
    whole = next((r for r in mine if (r[0].q_start, r[0].q_stop) == (start, stop)), None)
    if whole is not None and len(mine) == 1:
        return whole[1], whole[2]
    if whole is not None:
        out, lse = whole[1].clone(), whole[2].clone()
        mine = [r for r in mine if r is not whole]
    else:
        b, h = q.shape[0], q.shape[1]
        lse_dtype = mine[0][2].dtype if mine else _lse_dtype(q)
        out = q.new_zeros((b, h, stop - start, value_dim))
        lse = torch.full((b, h, stop - start), float("-inf"), dtype=lse_dtype, device=q.device)
    for block, part_out, part_lse in mine:
        rows = slice(block.q_start - start, block.q_stop - start)
        merged_out, merged_lse = merge(out[:, :, rows].clone(), lse[:, :, rows].clone(), part_out, part_lse)
        out[:, :, rows] = merged_out
        lse[:, :, rows] = merged_lse
    return out, lse
