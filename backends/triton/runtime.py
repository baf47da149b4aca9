"""Run-time layouts on the device: tile tables for documents and top-k built from the call's tensors.

A pattern with `document` leaves (or per-document sink/global sets) or `topk` leaves cannot be laid
out at compile time. Per call, this module computes every tile's class (empty, partial or full)
with torch ops on the inputs' device, from three sources: static subtrees (their compile-time tile
maps, kept on the device), document leaves (each tile's first and last document id) and top-k
leaves (the selected blocks). Classes combine through union, intersection and difference the way
`maskc.primitives.combinators` combines them, except that two partial children stay partial (the
tile is stored and masked by the predicate, which is exact): stored tiles are a superset of the
non-empty ones and full tiles a subset of the full ones, so the kernels compute the exact mask.

The tables are compacted with cumulative sums and one scatter into arrays of fixed capacity (every
tile of the grid): no value is read back to the host, nothing depends on data in shape, and a call
can be captured in a CUDA graph. A run-time layout therefore never needs more tiles than reserved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from maskc.cluster_order import SortedClusterRule, sorted_classes
from maskc.clustering import cluster_labels
from maskc.grid import TileGrid
from maskc.rules import (
    ClusterRule,
    DifferenceRule,
    DocumentRule,
    IntersectRule,
    PerDocumentRule,
    Rule,
    TokenSet,
    TopkRule,
    UnionRule,
)
from maskc.selection import select_blocks

from .tables import WalkTables

#: (any, full) boolean tile maps, broadcastable to (batch, heads, row tiles, column tiles).
Classes = tuple[torch.Tensor, torch.Tensor]


def needs_runtime_layout(rules: Sequence[Rule]) -> bool:
    """Whether the rules hold leaves decided per call (documents, top-k, clusters)."""
    return any(rule.dynamic for rule in rules)


def document_labels(documents: torch.Tensor) -> torch.Tensor:
    """(B, N) non-decreasing ids → int32 document numbers 0, 1, … (equal ids, equal numbers)."""
    change = torch.zeros_like(documents, dtype=torch.int32)
    change[:, 1:] = (documents[:, 1:] != documents[:, :-1]).to(torch.int32)
    return change.cumsum(dim=1, dtype=torch.int32)


def document_ranks(labels: torch.Tensor) -> torch.Tensor:
    """(B, N) distance of each position from the start of its document."""
    n = labels.shape[1]
    positions = torch.arange(n, device=labels.device, dtype=torch.int32).expand_as(labels)
    starts = torch.zeros_like(labels, dtype=torch.bool)
    starts[:, 0] = True
    starts[:, 1:] = labels[:, 1:] != labels[:, :-1]
    first = torch.where(starts, positions, torch.zeros_like(positions)).cummax(dim=1).values
    return positions - first


def token_membership(tokens: TokenSet, index: torch.Tensor) -> torch.Tensor:
    """`tokens.contains` for a tensor of non-negative indices (of any size: those past n are outside)."""
    if tokens.member is not None:
        # copied to the device once per token set (a copy inside a CUDA graph capture would fail)
        copies = tokens.__dict__.setdefault("_device_copies", {})
        if str(index.device) not in copies:
            copies[str(index.device)] = torch.as_tensor(tokens.member, device=index.device)
        table = copies[str(index.device)]
        return table[index.clamp(max=tokens.n - 1).long()] & (index < tokens.n)
    if tokens.first is not None:
        return index < tokens.first
    return index % tokens.every == tokens.offset


@dataclass
class CallInputs:
    """What one call decides its run-time leaves from, as tensors on the device by key: the keys the
    predicate's `TritonEmitter.call_input` arguments name (`input_keys`)."""

    batch: int
    heads: int
    n: int
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        rules: Sequence[Rule],
        q: torch.Tensor,
        k: torch.Tensor,
        documents: torch.Tensor | None,
        centroids: torch.Tensor | None = None,
    ) -> CallInputs:
        """From the call's q (B, H, N, D), k (B, Hkv, N, D) and documents (B, N), with torch ops where
        they lie: document numbers, per-document memberships, top-k selections, cluster labels (from
        `centroids` (H, clusters, D) when given, else fitted per call)."""
        batch, heads, n, _ = q.shape
        inputs = cls(batch, heads, n)
        labels = None if documents is None else document_labels(documents)
        if labels is not None:
            inputs.values["labels"] = labels
        with torch.no_grad():
            for leaf in (leaf for rule in rules for leaf in rule.leaves()):
                inputs._add(leaf, q, k, labels, centroids)
        return inputs

    def _add(
        self, leaf: Rule, q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor | None, centroids: torch.Tensor | None
    ) -> None:
        origin = str(leaf.origin)
        if isinstance(leaf, TopkRule):
            selected = select_blocks(q, k, leaf.params, leaf.block, leaf.causal)
            self.values[f"selected:{origin}"] = selected.to(torch.int8).contiguous()
        elif isinstance(leaf, PerDocumentRule) and labels is not None:
            member = token_membership(leaf.within, document_ranks(labels))
            self.values[f"members:{origin}"] = member.to(torch.int8).contiguous()
        elif isinstance(leaf, ClusterRule):
            keys = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            q_labels, k_labels = cluster_labels(leaf.params, q, keys, leaf.origin, centroids)
            self.values[f"q_labels:{origin}"] = q_labels.to(torch.int32).contiguous()
            self.values[f"k_labels:{origin}"] = k_labels.to(torch.int32).contiguous()


def _tile_spans(labels: torch.Tensor, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile of `size` positions: the document number of its first and of its last position."""
    first = labels[:, ::size]
    last_positions = torch.clamp(torch.arange(1, first.shape[1] + 1, device=labels.device) * size, max=n) - 1
    return first, labels[:, last_positions]


def _tile_counts(values: torch.Tensor, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, tiles) count of true values per tile, and each tile's size (the last one clipped at n)."""
    tiles = -(-n // size)
    padded = torch.nn.functional.pad(values.to(torch.int32), (0, tiles * size - n))
    counts = padded.reshape(values.shape[0], tiles, size).sum(dim=-1)
    sizes = torch.clamp(n - torch.arange(tiles, device=values.device) * size, max=size)
    return counts, sizes


def _document_classes(inputs: CallInputs, grid: TileGrid) -> Classes:
    """Same document: a tile's rows hold every document number from their first's to their last's
    (numbers are consecutive and positions contiguous), and so do its columns, so the tile meets one
    document on both sides exactly when the two spans overlap; it is full when one document covers it."""
    labels = inputs.values["labels"]
    r0, r1 = _tile_spans(labels, grid.block_m, grid.n)
    c0, c1 = _tile_spans(labels, grid.block_n, grid.n)
    any_ = (r0[:, :, None] <= c1[:, None, :]) & (c0[:, None, :] <= r1[:, :, None])
    full = (r0 == r1)[:, :, None] & (c0 == c1)[:, None, :] & (r0[:, :, None] == c0[:, None, :])
    return any_[:, None], full[:, None]


def _member_classes(leaf: PerDocumentRule, inputs: CallInputs, grid: TileGrid) -> Classes:
    """A per-document set: its side's member counts per tile, within the same document."""
    member = inputs.values[f"members:{leaf.origin}"].bool()
    sides = ["rows", "columns"] if leaf.direction == "both" else [leaf.direction]
    any_ = full = None
    for side in sides:
        size = grid.block_m if side == "rows" else grid.block_n
        counts, sizes = _tile_counts(member, size, grid.n)
        some, every = counts > 0, counts == sizes
        some, every = (some[:, :, None], every[:, :, None]) if side == "rows" else (some[:, None], every[:, None])
        any_ = some if any_ is None else any_ | some
        full = every if full is None else full | every
    doc_any, doc_full = _document_classes(inputs, grid)
    return doc_any & any_[:, None], doc_full & full[:, None]


def _block_to_tiles(selected: torch.Tensor, block: int, size: int, tiles: int, dim: int) -> tuple[torch.Tensor, ...]:
    """Along `dim`, block units → tile units: (any, all) over the blocks a tile covers."""
    if size <= block:
        index = torch.arange(tiles, device=selected.device) * size // block
        picked = selected.index_select(dim, index)
        return picked, picked
    factor = size // block
    pad = tiles * factor - selected.shape[dim]
    moved = selected.movedim(dim, -1)
    padded_any = torch.nn.functional.pad(moved, (0, pad), value=False)
    padded_all = torch.nn.functional.pad(moved, (0, pad), value=True)  # positions past n hold nothing to miss
    shape = (*moved.shape[:-1], tiles, factor)
    return (
        padded_any.reshape(shape).any(dim=-1).movedim(-1, dim),
        padded_all.reshape(shape).all(dim=-1).movedim(-1, dim),
    )


def _presence(labels: torch.Tensor, clusters: int, size: int) -> torch.Tensor:
    """(B, H, N) labels → (B, H, tiles, clusters): which clusters occur in each tile of `size` positions."""
    batch, heads, n = labels.shape
    tiles = -(-n // size)
    tile = torch.arange(n, device=labels.device) // size
    index = ((torch.arange(batch * heads, device=labels.device)[:, None] * tiles + tile) * clusters).reshape(
        batch, heads, n
    ) + labels
    out = torch.zeros(batch * heads * tiles * clusters, dtype=torch.float32, device=labels.device)
    out.index_fill_(0, index.reshape(-1), 1.0)
    return out.reshape(batch, heads, tiles, clusters)


def _cluster_classes(leaf: ClusterRule, inputs: CallInputs, grid: TileGrid) -> Classes:
    """A tile meets a cluster when its rows and its columns both hold that cluster; it is full when
    both hold that cluster alone."""
    q_labels, k_labels = inputs.values[f"q_labels:{leaf.origin}"], inputs.values[f"k_labels:{leaf.origin}"]
    rows = _presence(q_labels, leaf.params.clusters, grid.block_m)
    cols = _presence(k_labels, leaf.params.clusters, grid.block_n)
    any_ = (rows @ cols.transpose(-1, -2)) > 0
    single = (rows.sum(dim=-1) == 1)[..., :, None] & (cols.sum(dim=-1) == 1)[..., None, :]
    return any_, any_ & single


def _topk_classes(leaf: TopkRule, inputs: CallInputs, grid: TileGrid) -> Classes:
    selected = inputs.values[f"selected:{leaf.origin}"].bool()
    rows_any, rows_all = _block_to_tiles(selected, leaf.block, grid.block_m, grid.row_tiles, 2)
    any_ = _block_to_tiles(rows_any, leaf.block, grid.block_n, grid.col_tiles, 3)[0]
    full = _block_to_tiles(rows_all, leaf.block, grid.block_n, grid.col_tiles, 3)[1]
    return any_, full


class StaticMaps:
    """Compile-time tile maps of static subtrees, and small constant tables, on the device: copied on
    first use, so later calls (and CUDA graph captures after a first call) copy nothing."""

    def __init__(self) -> None:
        self._maps: dict[tuple[int, TileGrid, str], Classes] = {}
        self._keep: list[Rule] = []
        self._constants: dict[tuple[bytes, str, str], torch.Tensor] = {}

    def constant(self, values: np.ndarray, device: torch.device) -> torch.Tensor:
        """A small host array on the device, copied once (a copy inside a CUDA graph capture would fail)."""
        key = (values.tobytes(), values.dtype.str, str(device))
        if key not in self._constants:
            self._constants[key] = torch.as_tensor(values, device=device)
        return self._constants[key]

    def get(self, rule: Rule, grid: TileGrid, device: torch.device) -> Classes:
        key = (id(rule), grid, str(device))
        if key not in self._maps:
            cls = rule.grid_classes(grid)
            self._maps[key] = (torch.as_tensor(cls.any, device=device), torch.as_tensor(cls.full, device=device))
            self._keep.append(rule)
        return self._maps[key]


def tile_classes(rule: Rule, grid: TileGrid, inputs: CallInputs, static: StaticMaps, device: torch.device) -> Classes:
    """(any, full) of every tile for this call: stored tiles cover the mask, full tiles lie inside it."""
    if not rule.dynamic:
        return static.get(rule, grid, device)
    if isinstance(rule, SortedClusterRule):
        return sorted_classes(rule, grid, inputs.values)
    if isinstance(rule, DocumentRule):
        return _document_classes(inputs, grid)
    if isinstance(rule, PerDocumentRule):
        return _member_classes(rule, inputs, grid)
    if isinstance(rule, TopkRule):
        return _topk_classes(rule, inputs, grid)
    if isinstance(rule, ClusterRule):
        return _cluster_classes(rule, inputs, grid)
    kids = [tile_classes(kid, grid, inputs, static, device) for kid in rule.children()]
    if isinstance(rule, UnionRule):
        return _fold(torch.logical_or, [a for a, _ in kids]), _fold(torch.logical_or, [f for _, f in kids])
    if isinstance(rule, IntersectRule):
        return _fold(torch.logical_and, [a for a, _ in kids]), _fold(torch.logical_and, [f for _, f in kids])
    if isinstance(rule, DifferenceRule):
        (a_any, a_full), (b_any, b_full) = kids
        return a_any & ~b_full, a_full & ~b_any
    raise NotImplementedError(f"no run-time layout for {rule.describe()}")


def _fold(op: object, maps: list[torch.Tensor]) -> torch.Tensor:
    out = maps[0]
    for other in maps[1:]:
        out = op(out, other)  # type: ignore[operator]
    return out


def compact(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(G, lines, width) boolean maps → (pointers (G · (lines + 1)), indices (G · lines · width)).

    The pointers of map g sit at [g · (lines + 1), (g + 1) · (lines + 1)) as the kernels read them;
    the indices of each line are sorted, and entries past the total are unused capacity.
    """
    groups, lines, width = maps.shape
    flat = maps.reshape(-1)
    counts = maps.sum(dim=-1, dtype=torch.int32).reshape(-1)
    starts = torch.zeros(groups * lines + 1, dtype=torch.int32, device=maps.device)
    starts[1:] = counts.cumsum(0, dtype=torch.int32)
    at = torch.arange(groups, device=maps.device)[:, None] * lines + torch.arange(lines + 1, device=maps.device)
    pointers = starts[at].reshape(-1)
    slot = flat.cumsum(0, dtype=torch.int32) - 1
    capacity = flat.numel()
    target = torch.where(flat, slot.long(), capacity)
    values = torch.arange(width, device=maps.device, dtype=torch.int32).repeat(groups * lines)
    indices = torch.zeros(capacity + 1, dtype=torch.int32, device=maps.device).scatter_(0, target, values)
    return pointers, indices[:capacity]


@dataclass(frozen=True)
class RuntimeTables:
    """One call's tables for one walk and tile shape, and how a (batch, head) finds its layout in them."""

    walk: WalkTables
    #: table index of (b, h) = table_of_head[h] + b * table_stride
    table_of_head: torch.Tensor
    table_stride: int


def runtime_tables(
    rules: Sequence[Rule],
    head_layout: np.ndarray,
    grid: TileGrid,
    walk: str,
    inputs: CallInputs,
    static: StaticMaps,
    device: torch.device,
) -> RuntimeTables:
    """Tables of every (batch, layout) — or (batch, head) when a leaf differs per head (top-k)."""
    heads = inputs.heads
    layout_of = np.asarray(head_layout if len(head_layout) == heads else np.zeros(heads, dtype=np.int32))
    classes = [tile_classes(rule, grid, inputs, static, device) for rule in rules]
    # tables per (batch, head) when q and k decide a leaf: its predicate tables are indexed so too
    per_head = any(isinstance(leaf, (TopkRule, ClusterRule)) for rule in rules for leaf in rule.leaves())
    shape = (inputs.batch, heads if per_head else 1, grid.row_tiles, grid.col_tiles)
    if per_head:
        pick = [(classes[int(layout_of[h])], h) for h in range(heads)]
        any_ = torch.cat([c[0].expand(shape)[:, h : h + 1] for c, h in pick], dim=1)
        full = torch.cat([c[1].expand(shape)[:, h : h + 1] for c, h in pick], dim=1)
        table_of_head, stride = np.arange(heads, dtype=np.int32), heads
    else:
        any_ = torch.cat([a.expand(shape) for a, _ in classes], dim=1)
        full = torch.cat([f.expand(shape) for _, f in classes], dim=1)
        table_of_head, stride = layout_of.astype(np.int32), len(rules)
    full = full & any_
    partial = any_ & ~full
    if walk == "columns":
        full, partial = full.transpose(-1, -2), partial.transpose(-1, -2)
    full, partial = (m.reshape(-1, m.shape[-2], m.shape[-1]).contiguous() for m in (full, partial))
    full_ptr, full_idx = compact(full)
    partial_ptr, partial_idx = compact(partial)
    lengths = (full.sum(dim=(0, 2)) + partial.sum(dim=(0, 2))).to(torch.int32)
    order = torch.sort(-lengths, stable=True).indices.to(torch.int32)
    tables = WalkTables(
        lines=full.shape[1],
        long_lines=0,
        programs=full.shape[1],
        order=order,
        full_ptr=full_ptr,
        full_idx=full_idx,
        partial_ptr=partial_ptr,
        partial_idx=partial_idx,
    )
    return RuntimeTables(tables, static.constant(table_of_head, device), stride)
