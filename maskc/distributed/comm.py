"""Moving keys and values by the plan with torch.distributed, and their gradients back.

Forward: one batch of point-to-point isend/irecv (batch_isend_irecv) for every (src, dst) pair
of the plan (keys and values, and shipped query rows), then one broadcast per source with keys
every rank reads; all asynchronous, so the caller computes on its local keys while they travel.
Shipped rows' partial outputs come back in a second batch. Backward: the gradients of received
keys go back to their owners by the same pairs in reverse and broadcast keys' gradients are
summed at their source by a reduce, posted as soon as they are known so that they travel while
the caller differentiates its local calls; shipped rows exchange the gradients of their partial
outputs and then of their queries. Every rank posts these batches in the same order.

`traffic` counts the bytes of every buffer this process receives (a point-to-point receive,
a broadcast it does not send, a reduce it is the destination of), so that tests and benchmarks
compare what moved with the planner's prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from maskc.distributed.planner import Plan, Range, Shipment, Transfer


@dataclass
class Traffic:
    """Bytes received by this process, forward (keys and values) and backward (their gradients)."""

    forward: int = 0
    backward: int = 0

    def reset(self) -> None:
        self.forward = self.backward = 0


#: What this process has received since the last reset.
traffic = Traffic()


@dataclass
class Piece:
    """Keys and values at global positions [start, stop), from rank `source` (views into a buffer)."""

    start: int
    stop: int
    source: int
    k: torch.Tensor
    v: torch.Tensor


@dataclass
class Pending:
    """Receives in flight: their buffers (filled once `wait` returns) and the handles to wait on."""

    received: list[tuple[Transfer, torch.Tensor, torch.Tensor]]
    handles: list = field(default_factory=list)
    #: Query rows of other ranks this rank computes on its keys.
    guests: list[tuple[Shipment, torch.Tensor]] = field(default_factory=list)

    def wait(self) -> None:
        for handle in self.handles:
            handle.wait()
        self.handles = []


@dataclass(frozen=True)
class Group:
    """The process group, this process's rank in it and the global rank of every member."""

    group: dist.ProcessGroup | None
    rank: int
    size: int
    members: tuple[int, ...]

    @classmethod
    def of(cls, group: dist.ProcessGroup | None) -> Group:
        size = dist.get_world_size(group)
        members = tuple(dist.get_process_group_ranks(group)) if group is not None else tuple(range(size))
        return cls(group, dist.get_rank(group), size, members)


def gather_ranges(x: torch.Tensor, ranges: tuple[Range, ...], local: list[Range]) -> torch.Tensor:
    """The rows of shard x (B, H, m, D) at the given global positions, as one contiguous buffer."""
    return torch.cat([x[:, :, slice(*local_slice(a, b, local))] for a, b in ranges], dim=2).contiguous()


def local_slice(start: int, stop: int, local: list[Range]) -> tuple[int, int]:
    """Where global positions [start, stop) lie in a shard holding `local` ranges (in order)."""
    offset = 0
    for a, b in local:
        if a <= start and stop <= b:
            return offset + start - a, offset + stop - a
        offset += b - a
    raise ValueError(f"positions [{start}, {stop}) are not inside one of the shard's ranges {local}")


def _empty_like_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    return x.new_empty((x.shape[0], x.shape[1], rows, x.shape[3]))


def start_exchange(plan: Plan, group: Group, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Pending:
    """Post every send and receive of the plan for this rank; returns at once.

    A rank with no point-to-point message posts none. With NCCL, point-to-point batches need the
    group's communicator to exist already when not every rank takes part: initialize with
    `device_id=` (eager) or run any collective on the group first, as torch documents for
    batch_isend_irecv.
    """
    rank, local = group.rank, plan.rank_plans[group.rank].ranges
    ops, received = [], []
    for t in plan.sends(rank):
        for x in (k, v):
            ops.append(dist.P2POp(dist.isend, gather_ranges(x, t.ranges, local), group.members[t.dst], group.group))
    for t in plan.receives(rank):
        kb, vb = _empty_like_rows(k, t.keys), _empty_like_rows(v, t.keys)
        received.append((t, kb, vb))
        ops += [dist.P2POp(dist.irecv, b, group.members[t.src], group.group) for b in (kb, vb)]
    for s in plan.shipped(rank):
        ops.append(dist.P2POp(dist.isend, gather_ranges(q, s.ranges, local), group.members[s.dst], group.group))
    guests = [(s, _empty_like_rows(q, s.rows)) for s in plan.hosted(rank)]
    ops += [dist.P2POp(dist.irecv, b, group.members[s.src], group.group) for s, b in guests]
    handles = list(dist.batch_isend_irecv(ops)) if ops else []
    for t in plan.broadcasts:
        if t.src == rank:
            buffers = [gather_ranges(x, t.ranges, local) for x in (k, v)]
        else:
            buffers = [_empty_like_rows(k, t.keys), _empty_like_rows(v, t.keys)]
            received.append((t, *buffers))
        handles += [dist.broadcast(b, group.members[t.src], group=group.group, async_op=True) for b in buffers]
    traffic.forward += sum(kb.nbytes + vb.nbytes for _, kb, vb in received) + sum(b.nbytes for _, b in guests)
    return Pending(received, handles, guests)


def exchange_partials(
    plan: Plan,
    group: Group,
    computed: list[tuple[Shipment, torch.Tensor, torch.Tensor]],
    out_like: torch.Tensor,
    lse_like: torch.Tensor,
    *,
    backward: bool = False,
) -> Pending:
    """Partial outputs and lse of shipped rows, from the rank that computed them to the rank that owns
    the rows (forward); with backward=True their gradients the other way. `computed` holds what
    this rank sends; returns the receives in flight, as (shipment, out, lse) in `received`."""
    rank = group.rank
    incoming = plan.shipped(rank) if not backward else plan.hosted(rank)
    ops = []
    for s, out, lse in computed:
        peer = s.src if not backward else s.dst
        ops += [dist.P2POp(dist.isend, x.contiguous(), group.members[peer], group.group) for x in (out, lse)]
    received = []
    for s in incoming:
        out = out_like.new_empty((*out_like.shape[:2], s.rows, out_like.shape[3]))
        lse = lse_like.new_empty((*lse_like.shape[:2], s.rows))
        received.append((s, out, lse))
        peer = s.dst if not backward else s.src
        ops += [dist.P2POp(dist.irecv, x, group.members[peer], group.group) for x in (out, lse)]
    handles = list(dist.batch_isend_irecv(ops)) if ops else []
    counted = sum(out.nbytes + lse.nbytes for _, out, lse in received)
    if backward:
        traffic.backward += counted
    else:
        traffic.forward += counted
    return Pending(received, handles)


def pieces_of(received: list[tuple[Transfer, torch.Tensor, torch.Tensor]]) -> list[Piece]:
    """Received buffers cut into one piece per position range."""
    pieces = []
    for t, kb, vb in received:
        offset = 0
        for a, b in t.ranges:
            pieces.append(Piece(a, b, t.src, kb[:, :, offset : offset + b - a], vb[:, :, offset : offset + b - a]))
            offset += b - a
    return pieces


def send_key_gradients(
    plan: Plan,
    group: Group,
    grads: list[tuple[Transfer, torch.Tensor, torch.Tensor]],
    dk: torch.Tensor,
    dv: torch.Tensor,
) -> Pending:
    """Post the return of received keys' and values' gradients to their owners (point-to-point,
    and a reduce at the source of every broadcast), and the receives of this rank's own; returns
    at once. `grads` pairs each received transfer with its gradients; `add_key_gradients` adds
    what came back into dk, dv once it has."""
    rank = group.rank
    ops, incoming = [], []
    for t, gk, gv in grads:
        if t.dst is not None:
            ops += [dist.P2POp(dist.isend, g.contiguous(), group.members[t.src], group.group) for g in (gk, gv)]
    for t in plan.sends(rank):
        buffers = (_empty_like_rows(dk, t.keys), _empty_like_rows(dv, t.keys))
        incoming.append((t, *buffers))
        ops += [dist.P2POp(dist.irecv, b, group.members[t.dst], group.group) for b in buffers]
    handles = list(dist.batch_isend_irecv(ops)) if ops else []
    sent = {t.src: (gk, gv) for t, gk, gv in grads if t.dst is None}
    for t in plan.broadcasts:
        if t.src == rank:
            buffers = (torch.zeros_like(_empty_like_rows(dk, t.keys)), torch.zeros_like(_empty_like_rows(dv, t.keys)))
            incoming.append((t, *buffers))
        else:
            buffers = tuple(g.contiguous() for g in sent[t.src])
        handles += [dist.reduce(b, group.members[t.src], group=group.group, async_op=True) for b in buffers]
    traffic.backward += sum(gk.nbytes + gv.nbytes for _, gk, gv in incoming)
    return Pending(incoming, handles)


def add_key_gradients(plan: Plan, group: Group, pending: Pending, dk: torch.Tensor, dv: torch.Tensor) -> None:
    """Wait for this rank's keys' gradients from the ranks that read them and add them into dk, dv."""
    pending.wait()
    local = plan.rank_plans[group.rank].ranges
    for t, gk, gv in pending.received:
        _add_rows(dk, gk, t.ranges, local)
        _add_rows(dv, gv, t.ranges, local)


def return_query_gradients(
    plan: Plan, group: Group, query_grads: list[tuple[Shipment, torch.Tensor]], dq: torch.Tensor
) -> None:
    """Send the gradients of hosted query rows to their owners and add those of this rank's shipped
    rows, computed by their hosts, into dq."""
    rank, local = group.rank, plan.rank_plans[group.rank].ranges
    ops = [dist.P2POp(dist.isend, g.contiguous(), group.members[s.src], group.group) for s, g in query_grads]
    shipped = [(s, _empty_like_rows(dq, s.rows)) for s in plan.shipped(rank)]
    ops += [dist.P2POp(dist.irecv, b, group.members[s.dst], group.group) for s, b in shipped]
    for handle in list(dist.batch_isend_irecv(ops)) if ops else []:
        handle.wait()
    traffic.backward += sum(b.nbytes for _, b in shipped)
    for s, g in shipped:
        _add_rows(dq, g, s.ranges, local)


def _add_rows(target: torch.Tensor, rows: torch.Tensor, ranges: tuple[Range, ...], local: list[Range]) -> None:
    """target (a shard) += rows, whose consecutive rows are the given global position ranges."""
    offset = 0
    for a, b in ranges:
        lo, hi = local_slice(a, b, local)
        target[:, :, lo:hi] += rows[:, :, offset : offset + b - a]
        offset += b - a
