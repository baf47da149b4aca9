"""Ring mode: whole shards of keys and values pass around the ranks, one step at a time.

Forward: at step s rank r holds the keys and values of rank r − s. It posts the send of that
shard to rank r + 1 and the receive of the next from rank r − 1, computes its plan's blocks on
the shard in hand while the next travels, and merges each block's partial output into a running
output by log-sum-exp (float32 at least). A rank holds its own shard, the one in hand and the one
arriving, whatever P is.

Backward: the shards go round again. A block's gradients follow from the merged output and lse
alone (flash attention's decomposition): with w = exp(lse_block − lse), the block's output
receives w·dO and its lse w·(dO·o_block − dO·O + dlse), so each block's call is recomputed with
autograd on the shard in hand and differentiated, with no other block in memory. The gradients
of a shard's keys and values start at the first rank after its owner and travel with the ring,
each rank adding its part (float32 at least), until the last step's send brings them home; each
send is posted as soon as the step's part is added, so it travels during the next step's
compute. Exact up to the order of additions.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from maskc.distributed.comm import Group, local_slice, traffic
from maskc.distributed.local import Job, local_attention, merge
from maskc.distributed.planner import Block


class Shift:
    """Tensors sent to the next rank of the ring, and as many received from the previous one, in flight."""

    def __init__(self, group: Group, tensors: tuple[torch.Tensor, ...], *, backward: bool) -> None:
        peers = group.members[(group.rank + 1) % group.size], group.members[(group.rank - 1) % group.size]
        self.sent = tuple(x.contiguous() for x in tensors)
        self.received = tuple(torch.empty_like(x) for x in self.sent)
        ops = [dist.P2POp(dist.isend, x, peers[0], group.group) for x in self.sent]
        ops += [dist.P2POp(dist.irecv, x, peers[1], group.group) for x in self.received]
        self.handles = dist.batch_isend_irecv(ops)
        count = sum(x.nbytes for x in self.received)
        if backward:
            traffic.backward += count
        else:
            traffic.forward += count

    def wait(self) -> tuple[torch.Tensor, ...]:
        for handle in self.handles:
            handle.wait()
        return self.received


def accumulation_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for 16-bit inputs, their own type otherwise: what running sums are kept in."""
    return torch.float32 if x.element_size() < 4 else x.dtype


def _by_source(job: Job) -> dict[int, list[Block]]:
    blocks: dict[int, list[Block]] = {}
    for block in job.plan.rank_plans[job.group.rank].blocks:
        blocks.setdefault(block.source, []).append(block)
    return blocks


def _block_inputs(
    job: Job, q: torch.Tensor, held: tuple[torch.Tensor, torch.Tensor], block: Block
) -> tuple[slice, slice, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the block's query rows lie in this rank's shard and its keys in the held shard, and those rows."""
    rows = slice(*local_slice(block.q_start, block.q_stop, job.plan.rank_plans[job.group.rank].ranges))
    keys = slice(*local_slice(block.k_start, block.k_stop, job.plan.rank_plans[block.source].ranges))
    return rows, keys, q[:, :, rows], held[0][:, :, keys], held[1][:, :, keys]


def ring_forward(job: Job, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of this rank's queries; out in the accumulation type (the caller casts it)."""
    group, blocks = job.group, _by_source(job)
    dtype = accumulation_dtype(q)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = q.new_zeros((*q.shape[:3], v.shape[3]), dtype=dtype)
    lse = torch.full(q.shape[:3], float("-inf"), dtype=lse_dtype, device=q.device)
    held: tuple[torch.Tensor, ...] = (k, v)
    for step in range(group.size):
        source = (group.rank - step) % group.size
        shift = Shift(group, held, backward=False) if step < group.size - 1 else None
        for block in blocks.get(source, []):
            rows, _, q_rows, k_block, v_block = _block_inputs(job, q, held, block)  # type: ignore[arg-type]
            part_out, part_lse = local_attention(q_rows, k_block, v_block, job, block.q_start, block.k_start)
            merged = merge(out[:, :, rows], lse[:, :, rows], part_out.to(dtype), part_lse.to(lse_dtype))
            out[:, :, rows], lse[:, :, rows] = merged
        if shift is not None:
            held = shift.wait()
    return out, lse


def ring_backward(
    job: Job,
    saved: tuple[torch.Tensor, ...],
    d_out: torch.Tensor | None,
    d_lse: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dq, dk, dv of this rank's shards, the keys' gradients from every rank that read them included."""
    q, k, v, out, lse = saved
    group, blocks = job.group, _by_source(job)
    dtype = accumulation_dtype(q)
    d_out = torch.zeros_like(out) if d_out is None else d_out.to(out.dtype)
    delta = (d_out * out).sum(-1)  # dO·O per row, in the accumulation type
    if d_lse is not None:
        delta = delta - d_lse.to(delta.dtype)
    dq = torch.zeros(q.shape, dtype=dtype, device=q.device)
    dk, dv = (torch.zeros(x.shape, dtype=dtype, device=x.device) for x in (k, v))
    held: tuple[torch.Tensor, ...] = (k, v)
    arriving: Shift | None = None  # gradients of the next step's shard, from the previous rank
    for step in range(group.size):
        source = (group.rank - step) % group.size
        shift = Shift(group, held, backward=True) if step < group.size - 1 else None
        gk, gv = (dk, dv) if step == 0 else (torch.zeros_like(dk), torch.zeros_like(dv))
        for block in blocks.get(source, []):
            rows, keys, *grads = _block_grads(job, q, held, block, (lse, d_out, delta))  # type: ignore[arg-type]
            dq[:, :, rows] += grads[0]
            gk[:, :, keys] += grads[1]
            gv[:, :, keys] += grads[2]
        if step > 0:
            if arriving is not None:
                incoming = arriving.wait()
                gk, gv = gk + incoming[0], gv + incoming[1]
            arriving = Shift(group, (gk, gv), backward=True)
        if shift is not None:
            held = shift.wait()
    if arriving is not None:
        home = arriving.wait()
        dk, dv = dk + home[0], dv + home[1]
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _block_grads(
    job: Job,
    q: torch.Tensor,
    held: tuple[torch.Tensor, torch.Tensor],
    block: Block,
    merged: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[Any, ...]:
    """The block's call recomputed and differentiated given the merged output's gradient:
    (query rows, key rows, dq rows, dk rows, dv rows)."""
    lse, d_out, delta = merged
    rows, keys, *inputs = _block_inputs(job, q, held, block)
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_() for x in inputs]
        part_out, part_lse = local_attention(*leaves, job, block.q_start, block.k_start)
    if not part_out.requires_grad:  # no pair in the block
        return rows, keys, *(torch.zeros_like(x) for x in leaves)
    total = lse[:, :, rows]
    finite = torch.isfinite(part_lse.detach())
    weight = torch.where(finite, torch.exp(part_lse.detach().to(total.dtype) - total), torch.zeros_like(total))
    rows_d_out = d_out[:, :, rows]
    d_part_out = weight[..., None] * rows_d_out
    d_part_lse = weight * ((rows_d_out * part_out.detach().to(rows_d_out.dtype)).sum(-1) - delta[:, :, rows])
    found = torch.autograd.grad(
        (part_out, part_lse),
        leaves,
        (d_part_out.to(part_out.dtype), d_part_lse.to(part_lse.dtype)),
        allow_unused=True,
    )
    return rows, keys, *(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, found))


class RingAttention(torch.autograd.Function):
    """The ring's forward, saving only this rank's shards, output and lse; the ring's backward."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, job: Job) -> Any:
        ctx.set_materialize_grads(False)
        out, lse = ring_forward(job, q.detach(), k.detach(), v.detach())
        ctx.job = job
        ctx.save_for_backward(q.detach(), k.detach(), v.detach(), out, lse)
        return out.to(q.dtype), lse

    @staticmethod
    def backward(ctx: Any, d_out: torch.Tensor | None, d_lse: torch.Tensor | None) -> Any:
        return (*ring_backward(ctx.job, ctx.saved_tensors, d_out, d_lse), None)
