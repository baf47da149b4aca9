"""Context-parallel planning: from the IR, which keys every rank needs, from whom, and how they move.

The planner reads the block-CSR of a compiled pattern. A rank's queries need the keys of every
stored tile in their tile rows (tile granularity: a stored tile is what a block-sparse kernel
reads whole). Key positions are handled as "atoms", the pieces between tile boundaries and
shard boundaries, so shards need not be tile aligned. What rank r needs of rank s's keys moves:

- by one broadcast from s, for the keys every other rank needs (global tokens), when P > 2;
- by point-to-point messages otherwise: neighbour halos of a window, or whole shards where a
  pattern needs most keys (dense causal);
- not at all for a few query rows that read far more keys than the rank holds (a global
  token's row): those rows are sent to the key owners instead, which compute their partial
  outputs and send them back ("shipments"). A rank ships its rows when they are few (at most a
  quarter of its rows) and sending them costs fewer rows than pulling the keys only they read.

Where the queries of the ranks read (nearly) every key, a plan of halos holds all of them at once
on every rank. The ring instead passes whole shards of keys and values around the ranks in P − 1
steps, each rank computing on the shard in hand while the next arrives (a shard in hand and one
in flight), and in the backward pass passes them round again with the gradients of the keys,
which end at their owners. `plan(mode="auto")` takes the ring when its bytes per rank are within
RING_BYTES_FACTOR of the halo plan's and it holds fewer received keys at once.

Every rank computes the same plan from the same pattern, so no metadata is exchanged. The plan
also says, per rank, the local attention calls ("blocks": query rows × one received or local key
range) and the work they hold (stored tile area, summed over heads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskc import limits
from maskc.distributed.sharding import rank_ranges
from maskc.errors import BackendError, DynamicPatternError, TooLargeError
from maskc.ir import BlockLayout, CompiledPattern

Range = tuple[int, int]

#: How keys move: "halo" (point-to-point halos, broadcasts of global keys, shipped rows), "ring",
#: or "auto" (the planner's choice).
MODES: tuple[str, ...] = ("auto", "halo", "ring")
#: The ring is taken when its bytes received per rank are at most this factor of the halo plan's
#: largest and it holds fewer received keys at once: its extra bytes buy bounded memory and
#: communication spread over the steps.
RING_BYTES_FACTOR = 1.25


@dataclass(frozen=True)
class Block:
    """One local attention call: queries [q_start, q_stop) against keys [k_start, k_stop) held by `source`."""

    q_start: int
    q_stop: int
    k_start: int
    k_stop: int
    source: int


@dataclass(frozen=True)
class Transfer:
    """Keys (and values) at the given position ranges, sent by `src` to `dst` (None: a broadcast to all)."""

    src: int
    dst: int | None
    ranges: tuple[Range, ...]

    @property
    def keys(self) -> int:
        return sum(b - a for a, b in self.ranges)


@dataclass(frozen=True)
class Shipment:
    """Query rows at `ranges` of rank `src`, sent to rank `dst`, which computes their partial
    output over its own keys (`blocks`) and sends it back."""

    src: int
    dst: int
    ranges: tuple[Range, ...]
    blocks: tuple[Block, ...]

    @property
    def rows(self) -> int:
        return sum(b - a for a, b in self.ranges)


@dataclass(frozen=True)
class CallSize:
    """The sizes of a call that turn rows into bytes."""

    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    value_dim: int
    itemsize: int
    #: Bytes of one lse entry (float32 on GPUs, float64 for float64 calls on the CPU).
    lse_itemsize: int = 4

    @property
    def key_bytes(self) -> int:
        """One key and one value row, every batch element and key/value head."""
        return self.batch * self.kv_heads * (self.head_dim + self.value_dim) * self.itemsize

    @property
    def accumulator_bytes(self) -> int:
        """One key and one value gradient row as the ring passes them (float32 at least, to add them up)."""
        return self.key_bytes * max(self.itemsize, 4) // self.itemsize

    @property
    def query_bytes(self) -> int:
        """One query row (or its gradient), every batch element and head."""
        return self.batch * self.heads * self.head_dim * self.itemsize

    @property
    def partial_bytes(self) -> int:
        """One row of a partial output and its lse (or their gradients)."""
        return self.batch * self.heads * (self.value_dim * self.itemsize + self.lse_itemsize)


@dataclass
class RankPlan:
    """What one rank holds, computes and receives."""

    rank: int
    ranges: list[Range]
    #: Local calls on the rank's own query rows (its shipped rows against its own keys only).
    blocks: list[Block]
    #: Stored tile area the rank computes (its blocks and its guests'), summed over heads.
    work: int
    #: Key positions the rank's queries read, whoever holds them.
    keys_read: int


@dataclass
class Plan:
    """The context-parallel plan of one pattern over `ranks` ranks."""

    n: int
    ranks: int
    sharding: str
    block_m: int
    block_n: int
    heads: int
    rank_plans: list[RankPlan]
    #: Point-to-point sends, ordered by (src, dst).
    p2p: list[Transfer]
    #: One broadcast per source rank with keys every other rank needs, ordered by src.
    broadcasts: list[Transfer]
    #: Query rows sent to key owners, ordered by (src, dst).
    shipments: list[Shipment] = field(default_factory=list)
    spec_name: str = ""
    #: "halo" or "ring" (see MODES), and why the planner took it.
    mode: str = "halo"
    reason: str = ""
    #: Ring only: work of each rank at each step (step s: the shard of rank r − s), [step][rank].
    step_work: list[list[int]] = field(default_factory=list)
    _received: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)

    def shipped(self, rank: int) -> list[Shipment]:
        """The rank's own rows sent out."""
        return [s for s in self.shipments if s.src == rank]

    def hosted(self, rank: int) -> list[Shipment]:
        """Other ranks' rows this rank computes on its keys."""
        return [s for s in self.shipments if s.dst == rank]

    def bytes_received(self, rank: int, size: CallSize) -> tuple[int, int]:
        """Bytes the rank receives in the forward and in the backward pass of a call of this size:
        keys and values (and their gradients), hosted query rows and the partial outputs of
        shipped ones (and the gradients of both)."""
        if self.mode == "ring":  # keys and values forward; again backward, with their gradients
            keys = self.keys_received(rank)
            return keys * size.key_bytes, keys * (size.key_bytes + size.accumulator_bytes)
        hosted = sum(s.rows for s in self.hosted(rank))
        shipped = sum(s.rows for s in self.shipped(rank))
        forward = self.keys_received(rank) * size.key_bytes
        forward += hosted * size.query_bytes + shipped * size.partial_bytes
        backward = self.grad_keys_received(rank) * size.key_bytes
        backward += hosted * size.partial_bytes + shipped * size.query_bytes
        return forward, backward

    def keys_received(self, rank: int) -> int:
        """Key positions the rank receives in the forward pass (each carries one key and one value row)."""
        return self._counts(rank)[0]

    def grad_keys_received(self, rank: int) -> int:
        """Key positions whose gradients come back to the rank (its keys that others read) in the backward pass."""
        return self._counts(rank)[1]

    def _counts(self, rank: int) -> tuple[int, int]:
        """(keys received forward, key gradients received backward), counted for every rank at once."""
        if not self._received:
            if self.mode == "ring":
                each = self.n - self.shard_len
                self._received.update({r: (each, each) for r in range(self.ranks)})
            else:
                forward, backward = [0] * self.ranks, [0] * self.ranks
                for t in self.p2p:
                    forward[t.dst] += t.keys
                    backward[t.src] += t.keys
                broadcast = sum(t.keys for t in self.broadcasts)
                forward = [keys + broadcast for keys in forward]  # every broadcast but a rank's own
                for t in self.broadcasts:
                    backward[t.src] += t.keys
                    forward[t.src] -= t.keys
                self._received.update({r: (forward[r], backward[r]) for r in range(self.ranks)})
        return self._received[rank]

    @property
    def peak_keys(self) -> int:
        """Received keys a rank holds at once, largest over ranks: all it receives (halo), or the
        shard in hand and the one arriving (ring)."""
        if self.mode == "ring":
            return min(2, self.ranks - 1) * self.shard_len
        return max(self.keys_received(r) for r in range(self.ranks))

    @property
    def ring_imbalance(self) -> float:
        """Ring only: the steps' summed largest work over the mean rank's work, minus one (ranks wait
        for each other at every step, so a step lasts as long as its busiest rank)."""
        total = sum(p.work for p in self.rank_plans)
        if not self.step_work or total == 0:
            return 0.0
        return sum(max(step) for step in self.step_work) / (total / self.ranks) - 1.0

    def sends(self, rank: int) -> list[Transfer]:
        return [t for t in self.p2p if t.src == rank]

    def receives(self, rank: int) -> list[Transfer]:
        return [t for t in self.p2p if t.dst == rank]

    @property
    def shard_len(self) -> int:
        return self.n // self.ranks

    @property
    def imbalance(self) -> float:
        """Largest work over mean work, minus one (0 when balanced)."""
        work = np.array([p.work for p in self.rank_plans], dtype=np.float64)
        return float(work.max() / work.mean() - 1.0) if work.mean() > 0 else 0.0

    def as_dict(self, size: CallSize | None = None) -> dict[str, Any]:
        """JSON-ready summary; with a call size, bytes received per rank as well."""
        ranks = []
        for p in self.rank_plans:
            entry: dict[str, Any] = {
                "rank": p.rank,
                "positions": [list(r) for r in p.ranges],
                "keys_read": p.keys_read,
                "keys_received": self.keys_received(p.rank),
                "grad_keys_received": self.grad_keys_received(p.rank),
                "work": p.work,
                "calls": len(p.blocks),
                "receives_from": {str(t.src): [list(r) for r in t.ranges] for t in self.receives(p.rank)},
                "ships_rows_to": {str(s.dst): [list(r) for r in s.ranges] for s in self.shipped(p.rank)},
            }
            if size is not None:
                entry["bytes_received"], entry["grad_bytes_received"] = self.bytes_received(p.rank, size)
            ranks.append(entry)
        return {
            "spec": self.spec_name,
            "seq_len": self.n,
            "ranks": self.ranks,
            "sharding": self.sharding,
            "mode": self.mode,
            "reason": self.reason,
            "peak_keys_held": self.peak_keys,
            "tile": [self.block_m, self.block_n],
            "heads": self.heads,
            "shard_len": self.shard_len,
            "all_gather_keys_per_rank": self.n - self.shard_len,
            "imbalance": self.imbalance,
            "ring_step_imbalance": self.ring_imbalance if self.mode == "ring" else None,
            "broadcasts": [{"src": t.src, "ranges": [list(r) for r in t.ranges]} for t in self.broadcasts],
            "per_rank": ranks,
        }


def plan(
    pattern: CompiledPattern,
    ranks: int,
    sharding: str = "contiguous",
    mode: str = "auto",
    max_held_keys: int | None = None,
) -> Plan:
    """The plan of `pattern` over `ranks` ranks; DynamicPatternError for run-time patterns.

    mode "halo" or "ring" forces how keys move; "auto" takes the ring when its bytes received per
    rank are at most RING_BYTES_FACTOR times the halo plan's largest and it holds fewer received
    keys at once (patterns whose ranks read nearly every key: dense causal, long windows), unless
    the halo plan holds at most `max_held_keys` received keys at once: within that memory budget
    halos are kept, since the ring's backward pass recomputes every call's forward.
    """
    if mode not in MODES:
        raise BackendError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if ranks > limits.MAX_PLAN_RANKS:
        raise TooLargeError(limits.exceeds("ranks", ranks, "MAX_PLAN_RANKS"))
    if max_held_keys is not None and max_held_keys < 0:
        raise BackendError(f"max_held_keys must be at least 0; got {max_held_keys}")
    if pattern.dynamic:
        raise DynamicPatternError(
            f"pattern {pattern.spec.name!r} has parts decided at run time ({pattern.run_time_parts}); context "
            "parallelism needs the keys each rank reads before the call, so it takes static patterns only"
        )
    shards = [rank_ranges(pattern.n, r, ranks, sharding) for r in range(ranks)]
    atoms = _Atoms(pattern, shards)
    if mode == "ring" and ranks > 1:
        return _ring_plan(pattern, sharding, shards, atoms, "asked for")
    halo = _halo_plan(pattern, sharding, shards, atoms)
    if mode == "halo" or ranks <= 2:
        halo.reason = "asked for" if mode == "halo" else "two ranks or fewer: a ring moves the same shards"
        return halo
    ring = _ring_plan(pattern, sharding, shards, atoms, "")
    ring_keys, halo_keys = ring.keys_received(0), max(halo.keys_received(r) for r in range(ranks))
    if max_held_keys is not None and halo.peak_keys <= max_held_keys:
        halo.reason = (
            f"{halo.peak_keys:,} keys held at once, within the budget of {max_held_keys:,} "
            "(a ring would recompute every call's forward in its backward pass)"
        )
        return halo
    if ring_keys <= RING_BYTES_FACTOR * halo_keys and ring.peak_keys < halo.peak_keys:
        ring.reason = (
            f"{ring_keys:,} keys per rank against {halo_keys:,} by halos, "
            f"{ring.peak_keys:,} held at once against {halo.peak_keys:,}"
        )
        return ring
    halo.reason = (
        f"{halo_keys:,} keys per rank at most, {halo.peak_keys:,} held at once, against {ring_keys:,} "
        f"and {ring.peak_keys:,} by a ring"
    )
    return halo


def _halo_plan(pattern: CompiledPattern, sharding: str, shards: list[list[Range]], atoms: _Atoms) -> Plan:
    """Point-to-point halos, broadcasts of keys every rank reads, and shipped rows."""
    n, ranks = pattern.n, len(shards)
    shipped = [atoms.rows_to_ship(rank, ranges, n // ranks) for rank, ranges in enumerate(shards)]
    kept = [_subtract(ranges, ship) for ranges, ship in zip(shards, shipped)]
    needs = [atoms.needed(rows) for rows in kept]
    p2p, broadcasts = _transfers(atoms, needs)
    shipments = [
        Shipment(src, dst, tuple(rows), tuple(atoms.blocks_of(rows, _pieces(shards[dst], dst))))
        for src in range(ranks)
        if shipped[src]
        for dst in range(ranks)
        if dst != src and (rows := atoms.rows_reading(shipped[src], dst))
    ]
    received: list[list[tuple[int, int, int]]] = [[] for _ in range(ranks)]
    for t in p2p:
        received[t.dst] += [(a, b, t.src) for a, b in t.ranges]
    rank_plans = []
    for rank, ranges in enumerate(shards):
        pieces = _pieces(ranges, rank) + received[rank]
        pieces += [(a, b, t.src) for t in broadcasts if t.src != rank for a, b in t.ranges]
        blocks = atoms.blocks_of(kept[rank], pieces) + atoms.blocks_of(shipped[rank], _pieces(ranges, rank))
        guests = [block for s in shipments if s.dst == rank for block in s.blocks]
        work = sum(atoms.block_work(block) for block in blocks + guests)
        read = atoms.count(needs[rank] | atoms.needed(shipped[rank]))
        rank_plans.append(RankPlan(rank, ranges, blocks, work, read))
    return _new_plan(pattern, sharding, rank_plans, p2p=p2p, broadcasts=broadcasts, shipments=shipments)


def _new_plan(pattern: CompiledPattern, sharding: str, rank_plans: list[RankPlan], **how: Any) -> Plan:
    """A plan of the pattern's sizes; `how` says how keys move (Plan's remaining fields)."""
    return Plan(
        n=pattern.n,
        ranks=len(rank_plans),
        sharding=sharding,
        block_m=pattern.block_m,
        block_n=pattern.block_n,
        heads=pattern.heads,
        rank_plans=rank_plans,
        spec_name=pattern.spec.name,
        **how,
    )


def _ring_plan(pattern: CompiledPattern, sharding: str, shards: list[list[Range]], atoms: _Atoms, reason: str) -> Plan:
    """Every rank's queries against every shard as it passes by; the work of each step."""
    ranks = len(shards)
    pieces = [(a, b, src) for src, ranges in enumerate(shards) for a, b in ranges]
    rank_plans = []
    step_work = [[0] * ranks for _ in range(ranks)]
    for rank, ranges in enumerate(shards):
        blocks = atoms.blocks_of(ranges, pieces)
        for block in blocks:
            step_work[(rank - block.source) % ranks][rank] += atoms.block_work(block)
        work = sum(step[rank] for step in step_work)
        rank_plans.append(RankPlan(rank, ranges, blocks, work, atoms.count(atoms.needed(ranges))))
    return _new_plan(
        pattern, sharding, rank_plans, p2p=[], broadcasts=[], mode="ring", reason=reason, step_work=step_work
    )


def _transfers(atoms: _Atoms, needs: list[np.ndarray]) -> tuple[list[Transfer], list[Transfer]]:
    """Point-to-point sends and broadcasts that bring every rank the keys it needs.

    Linear in ranks × atoms: each rank's wanted keys are cut into runs once, per owner."""
    ranks = len(needs)
    common = _common_needs(atoms, needs, ranks)
    p2p = []
    for dst in range(ranks):
        wanted = needs[dst] & ~common & (atoms.owner != dst)
        p2p += [Transfer(src, dst, ranges) for src, ranges in atoms.ranges_by_owner(wanted).items()]
    p2p.sort(key=lambda t: (t.src, t.dst))
    broadcasts = [Transfer(src, None, ranges) for src, ranges in sorted(atoms.ranges_by_owner(common).items())]
    return p2p, broadcasts


def _pieces(ranges: list[Range], rank: int) -> list[tuple[int, int, int]]:
    return [(a, b, rank) for a, b in ranges]


def _subtract(ranges: list[Range], removed: list[Range]) -> list[Range]:
    """The parts of `ranges` outside `removed` (both sorted, removed inside ranges)."""
    out = []
    for a, b in ranges:
        start = a
        for c, d in removed:
            if a <= c and d <= b:
                if c > start:
                    out.append((start, c))
                start = d
        if start < b:
            out.append((start, b))
    return out


def _merged(ranges: list[Range]) -> list[Range]:
    """Sorted ranges with overlapping or touching ones joined."""
    out: list[Range] = []
    for a, b in sorted(set(ranges)):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _common_needs(atoms: _Atoms, needs: list[np.ndarray], ranks: int) -> np.ndarray:
    """The atoms every rank but their owner needs (broadcast when P > 2)."""
    if ranks <= 2:
        return np.zeros(atoms.count_atoms, dtype=bool)
    matrix = np.stack(needs)
    others = matrix.sum(axis=0) - matrix[atoms.owner, np.arange(atoms.count_atoms)]
    return others == ranks - 1


class _Atoms:
    """Key positions cut at tile and shard boundaries; sets of keys are boolean masks over atoms."""

    def __init__(self, pattern: CompiledPattern, shards: list[list[Range]]) -> None:
        self.n = pattern.n
        self.block_m, self.block_n = pattern.block_m, pattern.block_n
        cuts = [np.arange(0, self.n, self.block_n), [self.n]]
        cuts += [np.array(r) for ranges in shards for r in ranges]
        self.bounds = np.unique(np.concatenate(cuts).astype(np.int64))
        self.lo, self.hi = self.bounds[:-1], self.bounds[1:]
        self.tile = self.lo // self.block_n
        self.row_tiles = -(-self.n // self.block_m)
        #: Atom of each key tile's first position (a tile lies in one shard unless a shard boundary cuts it).
        self._first_atom = np.searchsorted(self.lo, np.arange(0, self.n, self.block_n))
        self.owner = np.empty(len(self.lo), dtype=np.int64)
        for rank, ranges in enumerate(shards):
            for a, b in ranges:
                self.owner[(self.lo >= a) & (self.hi <= b)] = rank
        # (layout, number of heads that use it)
        counts = np.bincount(np.asarray(pattern.head_layout), minlength=len(pattern.layouts))
        self.layouts: list[tuple[BlockLayout, int]] = [
            (layout, int(count)) for layout, count in zip(pattern.layouts, counts) if count
        ]

    @property
    def count_atoms(self) -> int:
        return len(self.lo)

    def owned_by(self, rank: int) -> np.ndarray:
        return self.owner == rank

    def count(self, mask: np.ndarray) -> int:
        return int((self.hi - self.lo)[mask].sum())

    def ranges(self, mask: np.ndarray, first: int = 0) -> tuple[Range, ...]:
        """The masked atoms as maximal position ranges (`mask` covers the atoms from `first` on)."""
        edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1) + first, np.flatnonzero(edges == -1) + first
        return tuple((int(self.lo[a]), int(self.hi[b - 1])) for a, b in zip(starts, stops))

    def ranges_by_owner(self, mask: np.ndarray) -> dict[int, tuple[Range, ...]]:
        """The masked atoms as maximal position ranges within one owner, grouped by owner."""
        picked = np.flatnonzero(mask)
        if len(picked) == 0:
            return {}
        owners = self.owner[picked]
        # a run ends where the next picked atom is not adjacent or has another owner
        breaks = np.flatnonzero((np.diff(picked) != 1) | (np.diff(owners) != 0)) + 1
        out: dict[int, list[Range]] = {}
        for run in np.split(np.arange(len(picked)), breaks):
            a, b = picked[run[0]], picked[run[-1]]
            out.setdefault(int(owners[run[0]]), []).append((int(self.lo[a]), int(self.hi[b])))
        return {owner: tuple(ranges) for owner, ranges in out.items()}

    def _entries(self, q_start: int, q_stop: int) -> list[tuple[BlockLayout, int, np.ndarray, np.ndarray]]:
        """Per layout: its head count, then the row tile and column tile of every stored tile meeting the rows."""
        out = []
        first, last = q_start // self.block_m, (q_stop - 1) // self.block_m
        for layout, heads in self.layouts:
            lo, hi = layout.row_ptr[first], layout.row_ptr[last + 1]
            out.append((layout, heads, layout.tile_rows()[lo:hi], layout.col_idx[lo:hi].astype(np.int64)))
        return out

    def needed(self, ranges: list[Range]) -> np.ndarray:
        """Atoms read by queries in the given ranges (any head)."""
        tiles = np.zeros(-(-self.n // self.block_n), dtype=bool)
        for a, b in ranges:
            for _, _, _, cols in self._entries(a, b):
                tiles[cols] = True
        return tiles[self.tile]

    def block_work(self, block: Block) -> int:
        """Stored tile area within the block's query rows and key columns, summed over heads."""
        total = 0
        first, last = block.k_start // self.block_n, (block.k_stop - 1) // self.block_n
        for layout, heads, rows, cols in self._entries(block.q_start, block.q_stop):
            grid, inside = layout.grid, (cols >= first) & (cols <= last)
            rows, cols = rows[inside], cols[inside]
            height = np.minimum(grid.row_last(rows) + 1, block.q_stop) - np.maximum(grid.row_first(rows), block.q_start)
            width = np.minimum(grid.col_last(cols) + 1, block.k_stop) - np.maximum(grid.col_first(cols), block.k_start)
            total += heads * int((height * width).sum())
        return total

    def rows_to_ship(self, rank: int, ranges: list[Range], shard: int) -> list[Range]:
        """The rank's query rows to send to the key owners rather than pull keys for.

        Candidates are tile rows reading more than half a shard of other ranks' keys. Taken most
        remote keys first (rows of one global token group come together), the longest run is
        shipped that saves the most key rows (keys no other row of the rank reads) net of the
        query rows it costs (each row to each owner of keys it reads), within a quarter of the
        rank's rows.
        """
        own = self.owned_by(rank)
        units = self._heavy_units(ranges, own, shard)
        if not units or 2 * sum(b - a for a, b in units) > shard:
            return []
        needs = np.stack([self.needed([unit]) & ~own for unit in units])
        readers = needs.sum(axis=0) + (self.needed(_subtract(ranges, units)) & ~own)
        best, best_gain = 0, 0
        union = np.zeros(self.count_atoms, dtype=bool)
        shipped_rows = spent = 0
        order = np.argsort(-(needs * (self.hi - self.lo)).sum(axis=1), kind="stable")
        for taken, index in enumerate(order, start=1):
            (a, b), need = units[index], needs[index]
            readers, union = readers - need, union | need
            shipped_rows, spent = shipped_rows + b - a, spent + (b - a) * len(np.unique(self.owner[need]))
            if 4 * shipped_rows > shard:
                break
            gain = self.count(union & (readers == 0)) - spent
            if gain > best_gain:
                best, best_gain = taken, gain
        chosen = [units[index] for index in order[:best]]
        return _merged(chosen)

    def _heavy_units(self, ranges: list[Range], own: np.ndarray, shard: int) -> list[Range]:
        """The rank's rows, per tile row, that read more than half a shard of other ranks' keys."""
        heavy = []
        for a, b in ranges:
            for _, _, rows, cols in self._entries(a, b):
                remote = np.bincount(rows[~own[self._first_atom[cols]]], minlength=self.row_tiles) * self.block_n
                for tile in np.flatnonzero(2 * remote > shard):
                    lo, hi = max(a, int(tile) * self.block_m), min(b, (int(tile) + 1) * self.block_m)
                    if lo < hi:
                        heavy.append((lo, hi))
        return sorted(set(heavy))

    def rows_reading(self, rows: list[Range], owner: int) -> list[Range]:
        """Those of the given rows (per tile row) that read a key of `owner`."""
        units = [(max(a, t * self.block_m), min(b, (t + 1) * self.block_m)) for a, b in rows
                 for t in range(a // self.block_m, (b - 1) // self.block_m + 1)]  # fmt: skip
        return _merged([u for u in units if (self.needed([u]) & self.owned_by(owner)).any()])

    def blocks_of(self, rows: list[Range], pieces: list[tuple[int, int, int]]) -> list[Block]:
        """Local calls for the query rows in `rows` against the key pieces."""
        return [block for a, b in rows for block in self.blocks(a, b, pieces)]

    def blocks(self, q_start: int, q_stop: int, pieces: list[tuple[int, int, int]]) -> list[Block]:
        """Local calls for queries [q_start, q_stop): per available key piece, each run of needed keys,
        with the query rows narrowed to the tile rows that read it."""
        entries = self._entries(q_start, q_stop)
        need = self.needed([(q_start, q_stop)])
        blocks = []
        pieces = sorted(pieces)
        bounds = np.asarray([(a, b) for a, b, _ in pieces], dtype=np.int64).reshape(-1, 2)
        firsts = np.searchsorted(self.lo, bounds[:, 0])
        ends = np.searchsorted(self.hi, bounds[:, 1], side="right")
        needed_before = np.concatenate([[0], np.cumsum(need)])
        for index in np.flatnonzero(needed_before[ends] > needed_before[firsts]):  # pieces with a needed key
            first, end, source = int(firsts[index]), int(ends[index]), pieces[index][2]
            for k_start, k_stop in self.ranges(need[first:end], first):
                first_tile, last_tile = k_start // self.block_n, (k_stop - 1) // self.block_n
                rows = np.concatenate([r[(c >= first_tile) & (c <= last_tile)] for _, _, r, c in entries])
                lo = max(int(rows.min()) * self.block_m, q_start)
                hi = min((int(rows.max()) + 1) * self.block_m, q_stop)
                blocks.append(Block(lo, hi, k_start, k_stop, source))
        return blocks
