"""The bit-parallel engine: exact reachability for any static pattern, 64 sources per machine word.

State: for a chunk of sources, X[i] is a bit row saying which of them token i has heard from.
One layer maps X to X'[i] = X[i] | OR_{k : i attends k} X[k]: the definition of reach with a
residual connection, so the engine is exact by construction. The IR makes the OR cheap without
changing its value:

- a full tile (r, c) sends OR_{k in c} X[k] to every row of r: one OR per key tile, shared by all
  full tiles of that column, then one OR per stored tile;
- a partial tile whose rows all attend the same keys (a column of a global or sink set, say) is
  the same, over just those keys;
- any other partial tile contributes element by element (its exact element list, evaluated once
  per class of identical tiles).

Memory is O(n · chunk / 64) words for the state and O(partial elements) for the element lists,
never O(n²) bits at once; time is O(layers · (n + stored tiles + partial elements) · n / 64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskc.errors import TooLargeError
from maskc.grid import TileGrid, ragged_ranges
from maskc.ir import BlockLayout
from maskc.reach.stack import LayerStack
from maskc.rule import evaluate_tiles, tile_classes

#: Bytes of source-bit state per chunk (the rows of X).
STATE_BYTES = 32 << 20
#: Gathered words per element slice.
SLICE_WORDS = 1 << 22
#: Element-list entries allowed per layer pattern.
ELEMENT_LIMIT = 1 << 25
#: Word operations allowed for one layer over all sources (about a minute here), beyond which
#: the search is refused rather than left to run for hours.
WORK_LIMIT = 1 << 36
_TILES_PER_CHUNK = 1 << 12


def _pointers(owner: np.ndarray, count: int) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(np.bincount(owner, minlength=count)))).astype(np.int64)


@dataclass
class Segments:
    """Rows (or row tiles) with at least one item, and where their items start in a flat list."""

    rows: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, owner: np.ndarray, count: int) -> Segments:
        ptr = _pointers(owner, count)
        rows = np.flatnonzero(np.diff(ptr))
        return cls(rows=rows, starts=ptr[rows])

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """OR of each segment's values (one row per non-empty segment)."""
        return np.bitwise_or.reduceat(values, self.starts, axis=0)


@dataclass
class BitLayer:
    """One layer pattern split for the bit-parallel OR: full tiles, uniform partial tiles, elements."""

    grid: TileGrid
    full_cols: np.ndarray
    full_rows: Segments
    #: Key positions of every uniform partial tile, tile after tile, and the tiles' row-tile segments.
    uniform_keys: np.ndarray
    uniform_tiles: Segments
    uniform_rows: Segments
    element_keys: np.ndarray
    element_rows: Segments

    @property
    def words_per_source_word(self) -> int:
        """Word operations per layer for each word of source bits."""
        return 2 * self.grid.n + len(self.full_cols) + len(self.uniform_keys) + len(self.element_keys)

    def step(self, x: np.ndarray) -> np.ndarray:
        """X' from X, shape (n, words)."""
        grid = self.grid
        out = x.copy()
        acc = np.zeros((grid.row_tiles, x.shape[1]), dtype=np.uint64)
        if len(self.full_cols):
            key_tiles = np.bitwise_or.reduceat(x, grid.col_first(np.arange(grid.col_tiles)), axis=0)
            acc[self.full_rows.rows] |= self.full_rows.reduce(key_tiles[self.full_cols])
        if len(self.uniform_keys):
            per_tile = self.uniform_tiles.reduce(x[self.uniform_keys])
            acc[self.uniform_rows.rows] |= self.uniform_rows.reduce(per_tile)
        out |= np.repeat(acc, grid.block_m, axis=0)[: grid.n]
        rows, starts = self.element_rows.rows, self.element_rows.starts
        step = max(1, SLICE_WORDS // x.shape[1])
        lo = 0
        while lo < len(rows):
            hi = int(np.searchsorted(starts, starts[lo] + step, side="left"))
            hi = max(hi, lo + 1)
            end = starts[hi] if hi < len(rows) else len(self.element_keys)
            gathered = x[self.element_keys[starts[lo] : end]]
            out[rows[lo:hi]] |= np.bitwise_or.reduceat(gathered, starts[lo:hi] - starts[lo], axis=0)
            lo = hi
        return out


def _split_partial(layout: BlockLayout, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """For partial tiles: (uniform tile positions, their keys, owner per key, element rows, element keys)."""
    grid, rule = layout.grid, layout.rule
    reps, inverse = tile_classes(rule, grid, r, c)
    masks = evaluate_tiles(rule, grid, r[reps], c[reps])
    valid_rows = (grid.row_last(r[reps]) - grid.row_first(r[reps]) + 1)[:, None] > np.arange(grid.block_m)[None, :]
    uniform_class = ((masks == masks[:, :1, :]).all(axis=2) | ~valid_rows).all(axis=1)
    uniform = uniform_class[inverse]
    # uniform tiles: the keys of their first row
    k_cls, k_off = np.nonzero(masks[:, 0, :])
    k_ptr = _pointers(k_cls, len(reps))
    u = np.flatnonzero(uniform)
    owner, pick = ragged_ranges(k_ptr[inverse[u]], k_ptr[inverse[u] + 1] - 1)
    u_keys = grid.col_first(c[u])[owner] + k_off[pick]
    # other tiles: every element
    e_cls, e_x, e_y = np.nonzero(masks)
    e_ptr = _pointers(e_cls, len(reps))
    t = np.flatnonzero(~uniform)
    owner_e, pick_e = ragged_ranges(e_ptr[inverse[t]], e_ptr[inverse[t] + 1] - 1)
    e_rows = grid.row_first(r[t])[owner_e] + e_x[pick_e]
    e_keys = grid.col_first(c[t])[owner_e] + e_y[pick_e]
    return u, u_keys, owner, e_rows, e_keys


def build_bit_layer(layout: BlockLayout) -> BitLayer:
    grid = layout.grid
    rows, cols, full = layout.tile_rows(), layout.col_idx.astype(np.int64), layout.full
    partial = np.flatnonzero(~full)
    u_tiles, u_keys, u_owner, e_rows, e_keys = [], [], [], [], []
    offset = 0
    for lo in range(0, len(partial), _TILES_PER_CHUNK):
        chunk = partial[lo : lo + _TILES_PER_CHUNK]
        u, keys, owner, er, ek = _split_partial(layout, rows[chunk], cols[chunk])
        u_tiles.append(chunk[u])
        u_keys.append(keys)
        u_owner.append(owner + offset)
        offset += len(u)
        e_rows.append(er)
        e_keys.append(ek)
        if sum(len(e) for e in e_keys) > ELEMENT_LIMIT:
            raise TooLargeError(
                f"exact reachability of {layout.rule.describe()} at n = {grid.n} needs more than "
                f"{ELEMENT_LIMIT:,} element-level edges; verify at a smaller seq_len"
            )
    uniform_tiles = np.concatenate(u_tiles) if u_tiles else np.zeros(0, dtype=np.int64)
    element_rows = np.concatenate(e_rows) if e_rows else np.zeros(0, dtype=np.int64)
    order = np.argsort(element_rows, kind="stable")
    return BitLayer(
        grid=grid,
        full_cols=cols[full],
        full_rows=Segments.of(rows[full], grid.row_tiles),
        uniform_keys=np.concatenate(u_keys) if u_keys else np.zeros(0, dtype=np.int64),
        uniform_tiles=Segments.of(np.concatenate(u_owner) if u_owner else np.zeros(0, dtype=np.int64), offset),
        uniform_rows=Segments.of(rows[uniform_tiles], grid.row_tiles),
        element_keys=(np.concatenate(e_keys) if e_keys else np.zeros(0, dtype=np.int64))[order].astype(np.int32),
        element_rows=Segments.of(element_rows[order], grid.n),
    )


class BitModel:
    """Every distinct layer pattern of a stack, ready for bit-parallel steps."""

    def __init__(self, stack: LayerStack) -> None:
        self.stack = stack
        self.layers = [build_bit_layer(p.layout) for p in stack.patterns]
        n = stack.n
        self.words = max(1, min(-(-n // 64), STATE_BYTES // (8 * n)))
        work = max(layer.words_per_source_word for layer in self.layers) * -(-n // 64)
        if work > WORK_LIMIT:
            raise TooLargeError(
                f"exact reachability of {stack.name} at n = {n} needs about {work:.1e} word operations per "
                "layer (no interval structure to exploit); verify at a smaller seq_len"
            )

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


def required_bits(lo: int, hi: int, n: int, words: int, causal: bool) -> np.ndarray:
    """Which source bits each row must hold: all of the chunk, or for causal specs those at or before it."""
    need = np.zeros((n, words), dtype=np.uint64)
    prefix = np.cumsum(source_bits(lo, hi, hi, words)[lo:hi], axis=0, dtype=np.uint64)
    everything = prefix[-1] if hi > lo else np.zeros(words, dtype=np.uint64)
    if causal:
        need[lo:hi] = prefix
        need[hi:] = everything
    else:
        need[:] = everything
    return need


class BitSearch:
    """The reach state of one chunk of sources."""

    def __init__(self, model: BitModel, lo: int, hi: int) -> None:
        n, words, causal = model.stack.n, model.words, model.stack.causal
        self.model, self.lo, self.hi = model, lo, hi
        self.x = source_bits(lo, hi, n, words)
        self.need = required_bits(lo, hi, n, words, causal)
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
