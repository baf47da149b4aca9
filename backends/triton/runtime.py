"""Run-time layouts on the device: tile tables for documents and top-k built from the call's tensors.

A pattern with `document` leaves (or per-document sink/global sets) or `topk` leaves cannot be laid
out at compile time. Per call, this module computes every tile's kind (0 empty, 1 partial, 2 full;
`maskc.tile_kinds`) with torch ops on the inputs' device, from three sources: static subtrees (their
compile-time tile maps, kept on the device), document leaves (each tile's first and last document id)
and top-k leaves (the selected blocks). Kinds combine through union (maximum), intersection (minimum)
and difference, which keeps them sound (`maskc.tile_kinds`' lemma): stored tiles are a superset of
the non-empty ones and full tiles a subset of the full ones, so the kernels compute the exact mask.

The tables are compacted by two kernels (`compaction.compact_kinds`) into arrays of fixed capacity
(every tile of the grid): no value is read back to the host, nothing depends on data in shape, and a
call can be captured in a CUDA graph. A run-time layout therefore never needs more tiles than reserved.

A layout that is "same document" alone or intersected with static rules only (document-causal, a window
inside each document) makes no kind map: `compaction.compact_document_kinds` decides its kinds inside
the same two kernels, from the tiles' document spans and the static part's map.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from maskc.cluster_order import SortedClusterRule, sorted_kinds
from maskc.clustering import cluster_labels
from maskc.errors import BackendError
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
from maskc.tile_kinds import FULL, difference, intersection, kinds_of, union
from maskc.tracing import made_once

from .compaction import compacted, compacted_documents
from .tables import WalkTables


def needs_runtime_layout(rules: Sequence[Rule]) -> bool:
    """Whether the rules hold leaves decided per call (documents, top-k, clusters)."""
    return any(rule.dynamic for rule in rules)


def document_labels(documents: torch.Tensor) -> torch.Tensor:
    """(B, N) non-decreasing ids → int32 document numbers 0, 1, … (equal ids, equal numbers)."""
    change = torch.nn.functional.pad(documents[:, 1:] != documents[:, :-1], (1, 0))
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
        table = _on_device(tokens, "member", tokens.member, index.device)
        return table[index.clamp(max=tokens.n - 1).long()] & (index < tokens.n)
    if tokens.positions is not None:  # past the table's n: a binary search in the sorted list
        positions = _on_device(tokens, "positions", tokens.positions, index.device)
        if len(positions) == 0:
            return torch.zeros_like(index, dtype=torch.bool)
        at = torch.searchsorted(positions, index.long()).clamp(max=len(positions) - 1)
        return positions[at] == index
    if tokens.first is not None:
        return index < tokens.first
    return index % tokens.every == tokens.offset


def _on_device(tokens: TokenSet, name: str, array: np.ndarray, device: torch.device) -> torch.Tensor:
    """`array` of the token set on `device`, copied once per set and device (a copy inside a CUDA graph
    capture would fail)."""
    copies = tokens.__dict__.setdefault("_device_copies", {})
    key = (name, str(device))
    if key not in copies:
        copies[key] = torch.as_tensor(array, device=device)
    return copies[key]


@dataclass
class CallInputs:
    """What one call decides its run-time leaves from, as tensors on the device by key: the keys the
    predicate's `TritonEmitter.call_input` arguments name (`input_keys`)."""

    batch: int
    heads: int
    n: int
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    #: What `runtime_tables` built from these values (tile kinds per grid, tables per walk and grid),
    #: so that the backward of the call reuses the forward's (`eager.EagerAttention` keeps the object).
    built: dict[tuple, Any] = field(default_factory=dict, repr=False, compare=False)

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
        origin = str(leaf.origin)  # a plain string: torch.compile keeps the keys constant (sorted later)
        if isinstance(leaf, TopkRule):
            selected = select_blocks(q, k, leaf.params, leaf.block, leaf.causal)
            self.values[f"selected:{origin}"] = selected.contiguous().view(torch.int8)
        elif isinstance(leaf, PerDocumentRule) and labels is not None:
            member = token_membership(leaf.within, document_ranks(labels))
            self.values[f"members:{origin}"] = member.to(torch.int8).contiguous()
        elif isinstance(leaf, ClusterRule):
            group = q.shape[1] // k.shape[1]
            keys = k if group == 1 else k.repeat_interleave(group, dim=1)
            q_labels, k_labels = cluster_labels(leaf.params, q, keys, leaf.origin, centroids)
            self.values[f"q_labels:{origin}"] = q_labels.to(torch.int32).contiguous()
            self.values[f"k_labels:{origin}"] = k_labels.to(torch.int32).contiguous()


def _tile_spans(labels: torch.Tensor, size: int, n: int, static: StaticMaps) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile of `size` positions: the document number of its first and of its last position, (B, tiles)
    each, gathered in one op (the positions are a constant of the grid)."""
    ends = static.tensor(("tile ends", size, n, str(labels.device)), lambda: _tile_ends(size, n, labels.device))
    first, last = labels.index_select(1, ends).unflatten(1, (2, -1)).unbind(1)
    return first, last


def _tile_ends(size: int, n: int, device: torch.device) -> torch.Tensor:
    """The first positions of the tiles of `size`, then their last positions (the last tile clipped at n)."""
    starts = torch.arange(0, n, size, device=device)
    return torch.cat([starts, torch.clamp(starts + size, max=n) - 1])


def _tile_counts(values: torch.Tensor, size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, tiles) count of true values per tile, and each tile's size (the last one clipped at n)."""
    tiles = -(-n // size)
    padded = torch.nn.functional.pad(values.to(torch.int32), (0, tiles * size - n))
    counts = padded.reshape(values.shape[0], tiles, size).sum(dim=-1)
    sizes = torch.clamp(n - torch.arange(tiles, device=values.device) * size, max=size)
    return counts, sizes


def _document_kinds(inputs: CallInputs, grid: TileGrid, static: StaticMaps) -> torch.Tensor:
    """Same document: a tile's rows hold every document number from their first's to their last's
    (numbers are consecutive and positions contiguous), and so do its columns, so the tile meets one
    document on both sides exactly when the two spans overlap; it is full when one document covers it,
    that is when the rows' first number is the columns' last and the rows' last the columns' first
    (each span's first is at most its last, so all four are then equal)."""
    labels = inputs.values["labels"]
    batch = labels.shape[0]
    rows = _tile_spans(labels, grid.block_m, grid.n, static)
    columns = rows if grid.block_n == grid.block_m else _tile_spans(labels, grid.block_n, grid.n, static)
    r0, r1 = (x.view(batch, 1, -1, 1) for x in rows)
    c0, c1 = (x.view(batch, 1, 1, -1) for x in columns)
    return kinds_of((r0 <= c1) & (c0 <= r1), (r0 == c1) & (r1 == c0))


def _member_kinds(leaf: PerDocumentRule, inputs: CallInputs, grid: TileGrid, static: StaticMaps) -> torch.Tensor:
    """A per-document set: its side's member counts per tile (the union of both sides' when both),
    within the same document."""
    member = inputs.values[f"members:{leaf.origin}"].bool()
    sides = ["rows", "columns"] if leaf.direction == "both" else [leaf.direction]
    per_side = []
    for side in sides:
        size = grid.block_m if side == "rows" else grid.block_n
        counts, sizes = _tile_counts(member, size, grid.n)
        kind = kinds_of(counts > 0, counts == sizes)
        per_side.append(kind[:, None, :, None] if side == "rows" else kind[:, None, None, :])
    return intersection([_document_kinds(inputs, grid, static), union(per_side)])


def _block_to_tiles(
    selected: torch.Tensor, block: int, size: int, tiles: int, dim: int, reduce: str, static: StaticMaps
) -> torch.Tensor:
    """Along `dim`, block units → tile units: `reduce` ("any" or "all") over the blocks a tile covers."""
    if size == block and selected.shape[dim] == tiles:
        return selected
    if size < block:
        key = ("block of tile", tiles, size, block, str(selected.device))
        index = static.tensor(key, lambda: torch.arange(tiles, device=selected.device) * size // block)
        return selected.index_select(dim, index)
    factor = size // block
    pad = tiles * factor - selected.shape[dim]
    # positions past n hold nothing to miss: padding is False for "any", True for "all"
    padded = torch.nn.functional.pad(selected.movedim(dim, -1), (0, pad), value=reduce == "all")
    grouped = padded.unflatten(-1, (tiles, factor))
    return (grouped.any(dim=-1) if reduce == "any" else grouped.all(dim=-1)).movedim(-1, dim)


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


def _cluster_kinds(leaf: ClusterRule, inputs: CallInputs, grid: TileGrid) -> torch.Tensor:
    """A tile meets a cluster when its rows and its columns both hold that cluster; it is full when
    both hold that cluster alone."""
    q_labels, k_labels = inputs.values[f"q_labels:{leaf.origin}"], inputs.values[f"k_labels:{leaf.origin}"]
    rows = _presence(q_labels, leaf.params.clusters, grid.block_m)
    cols = _presence(k_labels, leaf.params.clusters, grid.block_n)
    any_ = (rows @ cols.transpose(-1, -2)) > 0
    single = (rows.sum(dim=-1) == 1)[..., :, None] & (cols.sum(dim=-1) == 1)[..., None, :]
    return kinds_of(any_, any_ & single)  # one cluster on each side, but not the same one: empty


def _topk_kinds(leaf: TopkRule, inputs: CallInputs, grid: TileGrid, static: StaticMaps) -> torch.Tensor:
    selected = inputs.values[f"selected:{leaf.origin}"]  # int8, 1 where selected

    def tiles(blocks: torch.Tensor, reduce: str) -> torch.Tensor:
        rows = _block_to_tiles(blocks, leaf.block, grid.block_m, grid.row_tiles, 2, reduce, static)
        return _block_to_tiles(rows, leaf.block, grid.block_n, grid.col_tiles, 3, reduce, static)

    if grid.block_m <= leaf.block and grid.block_n <= leaf.block:  # a tile lies in one block: all or nothing
        return tiles(selected, "any") * FULL
    selected = selected.view(torch.bool)
    return kinds_of(tiles(selected, "any"), tiles(selected, "all"))


class StaticMaps:
    """Compile-time tile maps of static subtrees, and small constant tables, on the device: copied on
    first use, so later calls (and CUDA graph captures after a first call) copy nothing."""

    def __init__(self) -> None:
        self._maps: dict[tuple, torch.Tensor] = {}
        self._beside_documents: dict[int, list[Rule] | None] = {}
        self._keep: list[Rule] = []
        self._constants: dict[tuple[bytes, str, str], torch.Tensor] = {}
        self._tensors: dict[tuple, torch.Tensor] = {}

    def tensor(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A constant of the grid made on the device by `make` (index tensors, aranges), made once per key
        (which names the device): later calls dispatch no op for it. One made inside a CUDA graph
        capture is not kept: it holds nothing until a replay (maskc.tracing)."""
        return made_once(self._tensors, key, make)

    def constant(self, values: np.ndarray, device: torch.device) -> torch.Tensor:
        """A small host array on the device, copied once (a copy inside a CUDA graph capture would fail)."""
        key = (values.tobytes(), values.dtype.str, str(device))
        if key not in self._constants:
            self._constants[key] = torch.as_tensor(values, device=device)
        return self._constants[key]

    def beside_documents(self, rule: Rule) -> list[Rule] | None:
        """`_static_beside_documents(rule)`, found once per rule (every walk of every call asks)."""
        if id(rule) not in self._beside_documents:
            self._beside_documents[id(rule)] = _static_beside_documents(rule)
            self._keep.append(rule)
        return self._beside_documents[id(rule)]

    def get(self, rule: Rule, grid: TileGrid, device: torch.device) -> torch.Tensor:
        """The compile-time tile kinds of the static `rule` on `device`."""
        key = (id(rule), grid, str(device))
        if key not in self._maps:
            self._maps[key] = _host_kinds(rule, grid).to(device)
            self._keep.append(rule)
        return self._maps[key]

    def folded(self, rule: UnionRule | IntersectRule, grid: TileGrid, device: torch.device) -> torch.Tensor | None:
        """The kinds of `rule`'s static children combined by its operation (union or intersection),
        on the device, or None when every child is dynamic: one map in place of one per child, so a call
        combines one op fewer per static child."""
        fixed = [child for child in rule.children() if not child.dynamic]
        if not fixed:
            return None
        combine = union if isinstance(rule, UnionRule) else intersection
        return self._fold(rule, "static children", fixed, combine, grid, device)

    def intersected(self, owner: Rule, parts: Sequence[Rule], grid: TileGrid, device: torch.device) -> torch.Tensor:
        """The kinds of the intersection of the static `parts` found under `owner`, on the device."""
        return self._fold(owner, "static parts", parts, intersection, grid, device)

    def _fold(
        self,
        owner: Rule,
        what: str,
        parts: Sequence[Rule],
        combine: Callable[[Iterable[torch.Tensor]], torch.Tensor],
        grid: TileGrid,
        device: torch.device,
    ) -> torch.Tensor:
        """`parts`' kinds combined by `combine` (union or intersection), once per grid and device."""
        key = (id(owner), what, grid, str(device))
        if key not in self._maps:
            # pairwise over a generator: one part's map at a time held beside the result
            self._maps[key] = combine(_host_kinds(part, grid) for part in parts).to(device)
            self._keep.append(owner)
        return self._maps[key]


def _host_kinds(rule: Rule, grid: TileGrid) -> torch.Tensor:
    """The compile-time tile kinds of the static `rule`, on the host."""
    classes = rule.grid_classes(grid)
    return kinds_of(torch.as_tensor(classes.any), torch.as_tensor(classes.full))


def tile_kinds(
    rule: Rule, grid: TileGrid, inputs: CallInputs, static: StaticMaps, device: torch.device
) -> torch.Tensor:
    """int8 kinds of every tile for this call (`maskc.tile_kinds`), broadcastable to (batch, heads, row
    tiles, column tiles): stored tiles cover the mask, full tiles lie inside it."""
    if not rule.dynamic:
        return static.get(rule, grid, device)
    if isinstance(rule, SortedClusterRule):
        return sorted_kinds(rule, grid, inputs.values)
    if isinstance(rule, DocumentRule):
        return _document_kinds(inputs, grid, static)
    if isinstance(rule, PerDocumentRule):
        return _member_kinds(rule, inputs, grid, static)
    if isinstance(rule, TopkRule):
        return _topk_kinds(rule, inputs, grid, static)
    if isinstance(rule, ClusterRule):
        return _cluster_kinds(rule, inputs, grid)
    if isinstance(rule, (UnionRule, IntersectRule)):
        # the static children folded once on the host (one map), then the run-time ones per call
        fixed = static.folded(rule, grid, device)
        kids = [] if fixed is None else [fixed]
        kids += [tile_kinds(kid, grid, inputs, static, device) for kid in rule.children() if kid.dynamic]
        return union(kids) if isinstance(rule, UnionRule) else intersection(kids)
    if isinstance(rule, DifferenceRule):
        return difference(*(tile_kinds(kid, grid, inputs, static, device) for kid in rule.children()))
    raise NotImplementedError(f"no run-time layout for {rule.describe()}")


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
    """Tables of every (batch, layout) — or (batch, head) when a leaf differs per head (top-k).

    Full and partial tiles are compacted in one op (`compact_kinds`); constants of the grid
    come from `static`. Built once per call, walk and grid: kept in `inputs.built`.
    """
    built_key = ("tables", walk, grid, str(device))
    if built_key in inputs.built:
        return inputs.built[built_key]
    heads = inputs.heads
    layout_of = np.asarray(head_layout if len(head_layout) == heads else np.zeros(heads, dtype=np.int32))
    fixed = static.beside_documents(rules[0]) if len(rules) == 1 else None
    if fixed is not None:  # kinds decided inside the compaction from the documents and one static map
        kinds = static.intersected(rules[0], fixed, grid, device) if fixed else None
        inputs.built[built_key] = _document_tables(inputs.values["labels"], kinds, grid, walk, heads, static)
        return inputs.built[built_key]
    key = ("kinds", grid, str(device))
    if key not in inputs.built:  # the rows and the columns walk of one grid share them
        inputs.built[key] = [tile_kinds(rule, grid, inputs, static, device) for rule in rules]
    kinds = inputs.built[key]
    # tables per (batch, head) when q and k decide a leaf: its predicate tables are indexed so too
    per_head = any(isinstance(leaf, (TopkRule, ClusterRule)) for rule in rules for leaf in rule.leaves())
    tables = heads if per_head else len(rules)
    shape = (inputs.batch, heads if per_head else 1, grid.row_tiles, grid.col_tiles)
    # 2 where full, 1 where partial, 0 where empty; compacted into full and partial tables in one op
    kind = _per_table(kinds, shape, layout_of, per_head, static, device)
    lines = grid.col_tiles if walk == "columns" else grid.row_tiles
    pointers, indices, order = compacted(kind.reshape(-1, grid.row_tiles, grid.col_tiles), walk == "columns")
    table_of_head = np.arange(heads, dtype=np.int32) if per_head else layout_of.astype(np.int32)
    walk_tables = _walk_tables(pointers, indices, order, lines)
    inputs.built[built_key] = RuntimeTables(walk_tables, static.constant(table_of_head, device), tables)
    return inputs.built[built_key]


def _static_beside_documents(rule: Rule) -> list[Rule] | None:
    """The static rules that `rule` intersects with "same document", when it is that alone or
    intersected (at any depth of intersections) with static rules only: the form whose tables
    `compact_document_kinds` builds without a kind map. None for any other rule."""
    if isinstance(rule, DocumentRule):
        return []
    if not isinstance(rule, IntersectRule):
        return None
    fixed = [child for child in rule.children() if not child.dynamic]
    dynamic = [child for child in rule.children() if child.dynamic]
    inner = _static_beside_documents(dynamic[0]) if len(dynamic) == 1 else None
    return None if inner is None else inner + fixed


def _document_tables(
    labels: torch.Tensor, kinds: torch.Tensor | None, grid: TileGrid, walk: str, heads: int, static: StaticMaps
) -> RuntimeTables:
    """One layout's tables per batch row from the document numbers and the static rules' `kinds`
    (folded once per grid), taken together inside the compaction: one op for kinds and tables."""
    if labels.shape[1] != grid.n:
        raise BackendError(f"document numbers for {labels.shape[1]} positions on a grid of {grid.n}")
    if kinds is not None:
        kinds = kinds.expand(grid.row_tiles, grid.col_tiles)
    pointers, indices, order = compacted_documents(labels, kinds, grid.block_m, grid.block_n, walk == "columns")
    lines = grid.col_tiles if walk == "columns" else grid.row_tiles
    zero = static.constant(np.zeros(heads, dtype=np.int32), labels.device)
    return RuntimeTables(_walk_tables(pointers, indices, order, lines), zero, 1)


def _walk_tables(pointers: torch.Tensor, indices: torch.Tensor, order: torch.Tensor, lines: int) -> WalkTables:
    """A walk's tables from the compaction's output (its programs already ordered longest first)."""
    (full_ptr, partial_ptr), (full_idx, partial_idx) = pointers.unbind(0), indices.unbind(0)
    return WalkTables(
        lines=lines,
        long_lines=0,
        programs=lines,
        order=order,
        full_ptr=full_ptr,
        full_idx=full_idx,
        partial_ptr=partial_ptr,
        partial_idx=partial_idx,
    )


def _per_table(
    maps: list[torch.Tensor],
    shape: tuple[int, int, int, int],
    layout_of: np.ndarray,
    per_head: bool,
    static: StaticMaps,
    device: torch.device,
) -> torch.Tensor:
    """Each layout's kinds → (batch, tables, row tiles, column tiles): the layouts in order, or per head
    the layout of each head."""
    if len(maps) == 1:
        return maps[0].expand(shape)
    if not per_head:
        return torch.cat([m.expand(shape) for m in maps], dim=1)
    layouts = static.constant(layout_of.astype(np.int64), device)
    heads = static.tensor(("heads", len(layout_of), str(device)), lambda: torch.arange(len(layout_of), device=device))
    # (layouts, batch, heads, …) → (heads, batch, …), head h from its layout's map, → (batch, heads, …)
    return torch.stack([m.expand(shape) for m in maps])[layouts, :, heads].transpose(0, 1)
