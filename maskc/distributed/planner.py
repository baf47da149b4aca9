"""Context-parallel planning: from the IR, which keys every rank needs, from whom, and how they move.

The planner reads the block-CSR of a compiled pattern. A rank's queries need the keys of every
stored tile in their tile rows (tile granularity: a stored tile is what a block-sparse kernel
reads whole). Key positions are handled as "atoms", the pieces between tile boundaries and
shard boundaries, so shards need not be tile aligned. What rank r needs of rank s's keys moves:

- by one broadcast from s, for the keys every other rank needs (global tokens), when P > 2;
- by point-to-point messages otherwise: neighbour halos of a window, or whole shards where a
  pattern needs most keys (dense causal).

Every rank computes the same plan from the same pattern, so no metadata is exchanged. The plan
also says, per rank, the local attention calls ("blocks": query rows × one received or local key
range) and the work they hold (stored tile area, summed over heads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskc.distributed.sharding import rank_ranges
from maskc.errors import DynamicPatternError
from maskc.ir import BlockLayout, CompiledPattern

Range = tuple[int, int]


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


@dataclass
class RankPlan:
    """What one rank holds, computes and receives."""

    rank: int
    ranges: list[Range]
    blocks: list[Block]
    #: Stored tile area of the rank's query rows, summed over heads (the kernel's work).
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
    spec_name: str = ""
    _received: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)

    def keys_received(self, rank: int) -> int:
        """Key positions the rank receives in the forward pass (each carries one key and one value row)."""
        return self._counts(rank)[0]

    def grad_keys_received(self, rank: int) -> int:
        """Key positions whose gradients come back to the rank (its keys that others read) in the backward pass."""
        return self._counts(rank)[1]

    def _counts(self, rank: int) -> tuple[int, int]:
        if rank not in self._received:
            forward = sum(t.keys for t in self.p2p if t.dst == rank)
            forward += sum(t.keys for t in self.broadcasts if t.src != rank)
            backward = sum(t.keys for t in self.p2p if t.src == rank)
            backward += sum(t.keys for t in self.broadcasts if t.src == rank)
            self._received[rank] = (forward, backward)
        return self._received[rank]

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

    def as_dict(self, bytes_per_key: int | None = None) -> dict[str, Any]:
        """JSON-ready summary; with bytes_per_key, bytes received per rank as well."""
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
            }
            if bytes_per_key is not None:
                entry["bytes_received"] = self.keys_received(p.rank) * bytes_per_key
                entry["grad_bytes_received"] = self.grad_keys_received(p.rank) * bytes_per_key
            ranks.append(entry)
        return {
            "spec": self.spec_name,
            "seq_len": self.n,
            "ranks": self.ranks,
            "sharding": self.sharding,
            "tile": [self.block_m, self.block_n],
            "heads": self.heads,
            "shard_len": self.shard_len,
            "all_gather_keys_per_rank": self.n - self.shard_len,
            "imbalance": self.imbalance,
            "broadcasts": [{"src": t.src, "ranges": [list(r) for r in t.ranges]} for t in self.broadcasts],
            "per_rank": ranks,
        }


def plan(pattern: CompiledPattern, ranks: int, sharding: str = "contiguous") -> Plan:
    """The plan of `pattern` over `ranks` ranks; DynamicPatternError for run-time patterns."""
    if pattern.dynamic:
        raise DynamicPatternError(
            f"pattern {pattern.spec.name!r} has a part decided at run time (cluster); context parallelism "
            "needs the keys each rank reads before the call, so it takes static patterns only"
        )
    n = pattern.n
    shards = [rank_ranges(n, r, ranks, sharding) for r in range(ranks)]
    atoms = _Atoms(pattern, shards)
    needs = [atoms.needed(ranges) for ranges in shards]
    common = _common_needs(atoms, needs, ranks)
    p2p = [
        Transfer(src, dst, atoms.ranges(needs[dst] & atoms.owned_by(src) & ~common[src]))
        for src in range(ranks)
        for dst in range(ranks)
        if src != dst and (needs[dst] & atoms.owned_by(src) & ~common[src]).any()
    ]
    broadcasts = [Transfer(src, None, atoms.ranges(common[src])) for src in range(ranks) if common[src].any()]
    rank_plans = []
    for rank, ranges in enumerate(shards):
        pieces = [(a, b, rank) for a, b in ranges]
        pieces += [(a, b, t.src) for t in p2p if t.dst == rank for a, b in t.ranges]
        pieces += [(a, b, t.src) for t in broadcasts if t.src != rank for a, b in t.ranges]
        blocks = [block for a, b in ranges for block in atoms.blocks(a, b, pieces)]
        work = sum(atoms.work(a, b) for a, b in ranges)
        rank_plans.append(RankPlan(rank, ranges, blocks, work, atoms.count(needs[rank])))
    return Plan(
        n=n,
        ranks=ranks,
        sharding=sharding,
        block_m=pattern.block_m,
        block_n=pattern.block_n,
        heads=pattern.heads,
        rank_plans=rank_plans,
        p2p=p2p,
        broadcasts=broadcasts,
        spec_name=pattern.spec.name,
    )


def _common_needs(atoms: _Atoms, needs: list[np.ndarray], ranks: int) -> list[np.ndarray]:
    """Per source rank, its keys that every other rank needs (broadcast when P > 2)."""
    none = np.zeros(atoms.count_atoms, dtype=bool)
    if ranks <= 2:
        return [none] * ranks
    common = []
    for src in range(ranks):
        others = [needs[dst] for dst in range(ranks) if dst != src]
        common.append(np.logical_and.reduce(others) & atoms.owned_by(src))
    return common


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

    def ranges(self, mask: np.ndarray) -> tuple[Range, ...]:
        """The masked atoms as maximal position ranges."""
        edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        return tuple((int(self.lo[a]), int(self.hi[b - 1])) for a, b in zip(starts, stops))

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

    def work(self, q_start: int, q_stop: int) -> int:
        """Stored tile area within query rows [q_start, q_stop), summed over heads."""
        total = 0
        for layout, heads, rows, cols in self._entries(q_start, q_stop):
            grid = layout.grid
            height = np.minimum(grid.row_last(rows) + 1, q_stop) - np.maximum(grid.row_first(rows), q_start)
            width = grid.col_last(cols) - grid.col_first(cols) + 1
            total += heads * int((height * width).sum())
        return total

    def blocks(self, q_start: int, q_stop: int, pieces: list[tuple[int, int, int]]) -> list[Block]:
        """Local calls for queries [q_start, q_stop): per available key piece, each run of needed keys,
        with the query rows narrowed to the tile rows that read it."""
        entries = self._entries(q_start, q_stop)
        need = self.needed([(q_start, q_stop)])
        blocks = []
        for a, b, source in sorted(pieces):
            inside = need & (self.lo >= a) & (self.hi <= b)
            for k_start, k_stop in self.ranges(inside):
                first_tile, last_tile = k_start // self.block_n, (k_stop - 1) // self.block_n
                rows = np.concatenate([r[(c >= first_tile) & (c <= last_tile)] for _, _, r, c in entries])
                lo = max(int(rows.min()) * self.block_m, q_start)
                hi = min((int(rows.max()) + 1) * self.block_m, q_stop)
                blocks.append(Block(lo, hi, k_start, k_stop, source))
        return blocks
