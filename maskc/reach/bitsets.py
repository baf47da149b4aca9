"""The bit-parallel engine: exact reachability for any static pattern, 64 sources per machine word.

State: for a chunk of sources, X[i] is a bit row saying which of them token i has heard from.
One layer maps X to X'[i] = X[i] | OR_{k : i attends k} X[k]: the definition of reach with a
residual connection. Everything below only regroups that OR (it is associative, commutative and
idempotent), so the engine is exact by construction:

- A full tile (r, c) sends OR_{k in c} X[k] to every row of r.
- A partial tile whose rows all attend the same keys (a column of a global set, say) sends the OR
  of those keys to every row of r; other partial tiles send, row by row, the OR of their keys.
- Partial tiles of one tile row with identical element masks over consecutive key tiles c0 … c1
  (a stride's diagonals, a dilated window's interior) share the work: OR_c M ⊗ X_c = M ⊗ (OR_c X_c),
  so their key blocks are OR-ed first (Y = X_c0 | … | X_c1, two look-ups in a sparse table of
  block ORs) and M is applied once.
- The keys a row takes from a tile are runs [a, b]; OR over a run is two look-ups in a sparse
  table of range ORs (level k holds OR of 2^k consecutive rows), instead of b − a + 1.

Memory is O(n · chunk / 64) words for the state and its tables, never O(n²) bits at once;
time is O(layers · (n log B + stored tiles + runs) · n / 64) word operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskc.errors import TooLargeError
from maskc.grid import TileGrid, ragged_ranges
from maskc.ir import BlockLayout
from maskc.reach.stack import LayerStack
from maskc.rules import evaluate_tiles, tile_classes

#: Bytes of working memory per chunk of sources: the state and the range-OR tables built from it.
STATE_BYTES = 192 << 20
#: Range look-ups allowed per layer pattern.
RUN_LIMIT = 1 << 25
#: Word operations allowed for one layer over all sources (about a minute per layer here), beyond
#: which the search is refused rather than left to run for hours.
WORK_LIMIT = 1 << 35
#: Copies of the value table alive at once during a step (values, two sparse-table levels, output).
_COPIES = 6
_TILES_PER_CHUNK = 1 << 12


def _floor_log2(values: np.ndarray) -> np.ndarray:
    return np.floor(np.log2(np.maximum(values, 1))).astype(np.int64)


@dataclass
class Gather:
    """out[t] |= OR of table[s] over the sources s of each target t, in padded buckets.

    Targets with up to 1, 2, 4, … sources form one bucket each, padded by repeating a source
    (OR is idempotent), so each bucket is a few whole-array ORs with no Python loop over targets.
    """

    buckets: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def build(cls, targets: np.ndarray, sources: np.ndarray) -> Gather:
        if len(targets) == 0:
            return cls([])
        order = np.lexsort((sources, targets))
        targets, sources = targets[order], sources[order]
        keep = np.concatenate(([True], (targets[1:] != targets[:-1]) | (sources[1:] != sources[:-1])))
        targets, sources = targets[keep], sources[keep]
        first = np.flatnonzero(np.concatenate(([True], targets[1:] != targets[:-1])))
        counts = np.diff(np.append(first, len(targets)))
        width = 1 << (np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64))
        buckets = []
        for w in np.unique(width):
            rows = np.flatnonzero(width == w)
            column = np.arange(w)[None, :]
            pick = first[rows][:, None] + np.minimum(column, counts[rows][:, None] - 1)
            buckets.append((targets[first[rows]], sources[pick]))
        return cls(buckets)

    @property
    def lookups(self) -> int:
        return sum(s.size for _, s in self.buckets)

    def apply(self, table: np.ndarray, out: np.ndarray) -> None:
        for targets, sources in self.buckets:
            acc = table[sources[:, 0]]
            for k in range(1, sources.shape[1]):
                acc |= table[sources[:, k]]
            out[targets] |= acc


@dataclass
class RangeOr:
    """OR over runs [a, b] of a value table, per target: sparse-table look-ups grouped by level."""

    levels: list[tuple[int, Gather]]

    @classmethod
    def build(cls, targets: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> RangeOr:
        level = _floor_log2(ends - starts + 1)
        out = []
        for k in np.unique(level):
            at = level == k
            t, a, b = targets[at], starts[at], ends[at] - (1 << int(k)) + 1
            out.append((int(k), Gather.build(np.concatenate([t, t]), np.concatenate([a, b]))))
        return cls(out)

    @property
    def lookups(self) -> int:
        return sum(g.lookups for _, g in self.levels)

    @property
    def depth(self) -> int:
        return max((k for k, _ in self.levels), default=0)

    def apply(self, values: np.ndarray, out: np.ndarray) -> None:
        table, built = values, 0
        for k, gather in self.levels:
            while built < k:
                half = 1 << built
                table = table[:-half] | table[half:]
                built += 1
            gather.apply(table, out)


def _mask_ids(layout: BlockLayout, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct element masks of the given tiles, each tile's mask index), evaluating one tile per class."""
    grid = layout.grid
    reps, inverse = tile_classes(layout.rule, grid, r, c)
    masks = evaluate_tiles(layout.rule, grid, r[reps], c[reps])
    packed = np.packbits(masks.reshape(len(reps), -1), axis=1)
    _, first, content = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    return masks[first], content.reshape(-1)[inverse]


def _runs(masks: np.ndarray) -> tuple[np.ndarray, ...]:
    """Runs of every row of every mask: (mask, row, first column, last column)."""
    padded = np.zeros((masks.shape[0], masks.shape[1], masks.shape[2] + 2), dtype=np.int8)
    padded[:, :, 1:-1] = masks
    k, x, y = np.nonzero(np.diff(padded, axis=2))
    return k[0::2], x[0::2], y[0::2], y[1::2] - 1


@dataclass
class TileGroups:
    """Partial tiles of one tile row with one mask over consecutive key tiles c0 … c1."""

    row_tile: np.ndarray
    mask: np.ndarray
    first: np.ndarray
    last: np.ndarray

    @classmethod
    def of(cls, r: np.ndarray, c: np.ndarray, mask: np.ndarray) -> TileGroups:
        order = np.lexsort((c, mask, r))
        r, c, mask = r[order], c[order], mask[order]
        new = np.concatenate(([True], (r[1:] != r[:-1]) | (mask[1:] != mask[:-1]) | (c[1:] != c[:-1] + 1)))
        start = np.flatnonzero(new)
        end = np.append(start[1:], len(r)) - 1
        return cls(row_tile=r[start], mask=mask[start], first=c[start], last=c[end])


@dataclass
class BitLayer:
    """One layer pattern ready for bit-parallel steps (see the module docstring)."""

    grid: TileGrid
    #: Full tiles: row tile (as target n + r) ← key tile.
    full: Gather
    #: Multi-tile groups: their key tile ranges, in the order their Y blocks follow X in the value table.
    group_first: np.ndarray
    group_last: np.ndarray
    #: Runs over the value table [X padded to whole key tiles; Y blocks], per row (target < n) or
    #: per row tile (target n + r, for tiles whose rows all attend the same keys).
    runs: RangeOr

    @property
    def padded(self) -> int:
        return self.grid.col_tiles * self.grid.block_n

    @property
    def values(self) -> int:
        """Rows of the value table."""
        return self.padded + len(self.group_first) * self.grid.block_n

    def work(self) -> int:
        """Word operations per layer for each word of source bits."""
        rows = self.values * (self.runs.depth + 2) + 3 * self.grid.n
        return rows + self.full.lookups + self.runs.lookups + len(self.group_first) * 3 * self.grid.block_n

    def _value_table(self, x: np.ndarray) -> np.ndarray:
        grid = self.grid
        values = np.zeros((self.values, x.shape[1]), dtype=np.uint64)
        values[: grid.n] = x
        if len(self.group_first):
            blocks = values[: self.padded].reshape(grid.col_tiles, grid.block_n, x.shape[1])
            ys = values[self.padded :].reshape(-1, grid.block_n, x.shape[1])
            level = _floor_log2(self.group_last - self.group_first + 1)
            table, built = blocks, 0
            for k in np.unique(level):
                while built < k:
                    half = 1 << built
                    table = table[:-half] | table[half:]
                    built += 1
                at = np.flatnonzero(level == k)
                ys[at] = table[self.group_first[at]] | table[self.group_last[at] - (1 << int(k)) + 1]
        return values

    def step(self, x: np.ndarray) -> np.ndarray:
        """X' from X, shape (n, words)."""
        grid = self.grid
        out = np.zeros((grid.n + grid.row_tiles, x.shape[1]), dtype=np.uint64)
        out[: grid.n] = x
        values = self._value_table(x)
        if self.full.buckets:
            blocks = values[: self.padded].reshape(grid.col_tiles, grid.block_n, x.shape[1])
            self.full.apply(np.bitwise_or.reduce(blocks, axis=1), out)
        self.runs.apply(values, out)
        rows = out[: grid.n]
        rows |= np.repeat(out[grid.n :], grid.block_m, axis=0)[: grid.n]
        return rows


def _partial_runs(layout: BlockLayout, r: np.ndarray, c: np.ndarray, group_base: int) -> tuple[np.ndarray, ...]:
    """Groups and runs of some partial tiles: (group first, group last, run targets, run starts, run ends)."""
    grid, n = layout.grid, layout.grid.n
    masks, mask_of = _mask_ids(layout, r, c)
    # a row is "don't care" for a mask only where every tile with that mask is clipped above it
    valid = np.zeros(len(masks), dtype=np.int64)
    np.maximum.at(valid, mask_of, grid.row_last(r) - grid.row_first(r) + 1)
    rows_valid = np.arange(grid.block_m)[None, :] < valid[:, None]
    uniform = ((masks == masks[:, :1, :]).all(axis=2) | ~rows_valid).all(axis=1)
    groups = TileGroups.of(r, c, mask_of)
    multi = groups.last > groups.first
    slot = np.cumsum(multi) - 1 + group_base
    base = np.where(multi, grid.col_tiles * grid.block_n + slot * grid.block_n, grid.col_first(groups.first))
    k, x, y0, y1 = _runs(masks)
    keep = ~uniform[k] | (x == 0)
    k, x, y0, y1 = k[keep], x[keep], y0[keep], y1[keep]
    ptr = np.concatenate(([0], np.cumsum(np.bincount(k, minlength=len(masks)))))
    owner, pick = ragged_ranges(ptr[groups.mask], ptr[groups.mask + 1] - 1)
    flat = uniform[groups.mask][owner]
    targets = np.where(flat, n + groups.row_tile[owner], grid.row_first(groups.row_tile[owner]) + x[pick])
    starts = base[owner] + y0[pick]
    ends = base[owner] + y1[pick]
    return groups.first[multi], groups.last[multi], targets, starts, ends


def build_bit_layer(layout: BlockLayout) -> BitLayer:
    grid = layout.grid
    rows, cols, full = layout.tile_rows(), layout.col_idx.astype(np.int64), layout.full
    partial = np.flatnonzero(~full)
    parts: list[tuple[np.ndarray, ...]] = []
    groups = 0
    for lo in range(0, len(partial), _TILES_PER_CHUNK):
        chunk = partial[lo : lo + _TILES_PER_CHUNK]
        parts.append(_partial_runs(layout, rows[chunk], cols[chunk], groups))
        groups += len(parts[-1][0])
        if sum(len(p[2]) for p in parts) > RUN_LIMIT:
            raise TooLargeError(
                f"exact reachability of {layout.rule.describe()} at n = {grid.n} needs more than "
                f"{RUN_LIMIT:,} element runs per layer; verify at a smaller seq_len"
            )
    empty = np.zeros(0, dtype=np.int64)
    joined = [np.concatenate([p[k] for p in parts]) if parts else empty for k in range(5)]
    return BitLayer(
        grid=grid,
        full=Gather.build(grid.n + rows[full], cols[full]),
        group_first=joined[0],
        group_last=joined[1],
        runs=RangeOr.build(joined[2], joined[3], joined[4]),
    )


def _refuse_beyond(stack: LayerStack, work: int) -> None:
    if work > WORK_LIMIT:
        raise TooLargeError(
            f"exact reachability of {stack.name} at n = {stack.n} needs about {work:.1e} word operations per "
            "layer (no interval structure to exploit); verify at a smaller seq_len"
        )


class BitModel:
    """Every distinct layer pattern of a stack, ready for bit-parallel steps."""

    def __init__(self, stack: LayerStack) -> None:
        self.stack = stack
        n = stack.n
        source_words = -(-n // 64)
        # a lower bound first (3 passes over the state plus the stored tiles), to refuse before building
        _refuse_beyond(stack, max(3 * n + p.layout.nnz for p in stack.patterns) * source_words)
        self.layers = [build_bit_layer(p.layout) for p in stack.patterns]
        _refuse_beyond(stack, max(layer.work() for layer in self.layers) * source_words)
        widest = max(max(layer.values, layer.grid.n + layer.grid.row_tiles) for layer in self.layers)
        self.words = max(1, min(source_words, STATE_BYTES // (8 * _COPIES * widest)))

    def image(self, reached: np.ndarray, pattern: int) -> np.ndarray:
        """The exact set one source's information covers one layer later."""
        x = reached.astype(np.uint64)[:, None]
        return self.layers[pattern].step(x)[:, 0] != 0

    def chunks(self) -> list[tuple[int, int]]:
        size = 64 * self.words
        return [(lo, min(lo + size, self.stack.n)) for lo in range(0, self.stack.n, size)]


def source_bits(lo: int, hi: int, n: int, words: int) -> np.ndarray:
    """X for sources lo … hi−1: each knows only itself."""
    x = np.zeros((n, words), dtype=np.uint64)
    t = np.arange(hi - lo)
    x[lo + t, t // 64] = np.left_shift(np.uint64(1), (t % 64).astype(np.uint64))
    return x


def required_bits(
    lo: int, hi: int, n: int, words: int, causal: bool, documents: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """Which source bits each row must hold: all of the chunk, or for causal specs those at or before it;
    with documents (first and last position of each position's document), those of its document only."""
    if documents is not None:
        return _document_required_bits(lo, hi, words, causal, documents)
    need = np.zeros((n, words), dtype=np.uint64)
    prefix = np.cumsum(source_bits(lo, hi, hi, words)[lo:hi], axis=0, dtype=np.uint64)
    everything = prefix[-1] if hi > lo else np.zeros(words, dtype=np.uint64)
    if causal:
        need[lo:hi] = prefix
        need[hi:] = everything
    else:
        need[:] = everything
    return need


def _document_required_bits(
    lo: int, hi: int, words: int, causal: bool, documents: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Row i needs the chunk's sources s in its document (and s ≤ i when causal): a range of sources,
    whose bits are a difference of two prefix sums (the bits are distinct, so sums are ORs)."""
    first, last = documents
    n = len(first)
    prefix = np.zeros((hi - lo + 1, words), dtype=np.uint64)
    prefix[1:] = np.cumsum(source_bits(lo, hi, hi, words)[lo:hi], axis=0, dtype=np.uint64)
    rows = np.arange(n)
    a = np.clip(first, lo, hi) - lo
    b = np.clip((rows if causal else last) + 1, lo, hi) - lo
    b = np.maximum(a, b)
    return prefix[b] - prefix[a]


class BitSearch:
    """The reach state of one chunk of sources."""

    def __init__(self, model: BitModel, lo: int, hi: int) -> None:
        n, words, causal = model.stack.n, model.words, model.stack.causal
        self.model, self.lo, self.hi = model, lo, hi
        self.x = source_bits(lo, hi, n, words)
        self.need = required_bits(lo, hi, n, words, causal, model.stack.document_bounds)
        self.recorded: tuple[int, int, np.ndarray] | None = None

    def apply(self, layer: int, pattern: int) -> bool:
        new = self.model.layers[pattern].step(self.x)
        changed = not np.array_equal(new, self.x)
        self.x = new
        return changed

    def complete(self) -> bool:
        return not (self.need & ~self.x).any()

    def reach_of(self, source: int) -> np.ndarray:
        t = source - self.lo
        return (self.x[:, t // 64] >> np.uint64(t % 64)) & np.uint64(1) != 0

    def record(self, layer: int) -> None:
        """Keep the first source of the chunk that misses a target, and its reach set."""
        missing = (self.need & ~self.x).any(axis=0)
        word = int(np.flatnonzero(missing)[0])
        bits = np.bitwise_or.reduce(self.need[:, word] & ~self.x[:, word])
        source = self.lo + 64 * word + ((int(bits) & -int(bits)).bit_length() - 1)
        self.recorded = (layer, source, self.reach_of(source))
