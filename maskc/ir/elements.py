"""Element-level algorithms on a layout's stored tiles: masks, CSR rows, counts, empty rows.

They read the stored tiles and evaluate the rule on partial tiles only, once per class of
identical tiles. They take any object with a layout's fields (`StoredTiles`), so the record
`maskc.ir.record.BlockLayout` can offer them as methods without an import cycle.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from maskc.errors import DynamicPatternError
from maskc.grid import TileGrid, ragged_ranges
from maskc.rules import Rule, evaluate_tiles, tile_classes

if TYPE_CHECKING:
    import scipy.sparse as sp

#: Tiles whose elements are materialized at once by `element_rows`.
TILES_PER_CHUNK = 4096


class StoredTiles(Protocol):
    """What the element algorithms read: a layout's grid, rule and CSR tables."""

    grid: TileGrid
    rule: Rule
    row_ptr: np.ndarray
    col_idx: np.ndarray
    full: np.ndarray

    @property
    def fast_rule(self) -> Rule: ...

    def tile_rows(self) -> np.ndarray: ...


def require_static(layout: StoredTiles) -> None:
    if layout.rule.dynamic:
        inputs = sorted({getattr(leaf, "decided_by", "q and k") for leaf in layout.rule.leaves() if leaf.dynamic})
        raise DynamicPatternError(
            f"the pattern has a part decided at run time ({layout.rule.describe()}); "
            f"its elements are known only after resolving it with {' and '.join(inputs)}"
        )


def tile_masks(layout: StoredTiles, r: np.ndarray, c: np.ndarray, full: np.ndarray) -> np.ndarray:
    """Element masks of the given stored tiles, evaluating one tile per signature class."""
    grid, rule = layout.grid, layout.fast_rule
    rows = np.arange(grid.block_m)[None, :, None] + grid.row_first(r)[:, None, None]
    cols = np.arange(grid.block_n)[None, None, :] + grid.col_first(c)[:, None, None]
    masks = (rows < grid.n) & (cols < grid.n)
    partial = np.flatnonzero(~full)
    if len(partial):
        first, inverse = tile_classes(rule, grid, r[partial], c[partial])
        reps = evaluate_tiles(rule, grid, r[partial][first], c[partial][first])
        masks[partial] = reps[inverse]
    return masks


def element_rows(layout: StoredTiles, row_tile_lo: int, row_tile_hi: int) -> sp.csr_matrix:
    """Element-level CSR of query rows in tiles [lo, hi), shape (rows, n).

    Written in CSR order directly: stored tiles are sorted by (row tile, column), so the
    elements ordered by (row tile, row within tile, tile, column within tile) are sorted by
    (row, column) already, and no sort of the elements is needed.
    """
    import scipy.sparse as sp  # imported here: commands that never build elements skip its import time

    require_static(layout)
    grid = layout.grid
    bm, bn = grid.block_m, grid.block_n
    a, b = layout.row_ptr[row_tile_lo], layout.row_ptr[row_tile_hi]
    r = layout.tile_rows()[a:b]
    c, full = layout.col_idx[a:b].astype(np.int64), layout.full[a:b]
    masks = tile_masks(layout, r, c, full).reshape(-1, bn)
    tile = np.repeat(np.arange(len(r)), bm)
    row_in_tile = np.tile(np.arange(bm), len(r))
    order = np.lexsort((tile, row_in_tile, r[tile]))
    segment, y = np.nonzero(masks[order])
    tile_of = tile[order][segment]
    indices = (c[tile_of] * bn + y).astype(np.int32)
    first_row = row_tile_lo * bm
    rows = min(row_tile_hi * bm, grid.n) - first_row
    local_row = r[tile_of] * bm + row_in_tile[order][segment] - first_row
    indptr = np.concatenate([[0], np.cumsum(np.bincount(local_row, minlength=rows))]).astype(np.int32)
    data = np.ones(len(indices), dtype=bool)
    return sp.csr_matrix((data, indices, indptr), shape=(rows, grid.n))


def row_chunks(layout: StoredTiles, tiles_per_chunk: int = TILES_PER_CHUNK) -> Iterator[tuple[int, int]]:
    """Row-tile ranges holding about `tiles_per_chunk` stored tiles each."""
    lo = 0
    while lo < layout.grid.row_tiles:
        target = layout.row_ptr[lo] + tiles_per_chunk
        hi = int(np.searchsorted(layout.row_ptr, target, side="right")) - 1
        hi = min(max(hi, lo + 1), layout.grid.row_tiles)
        yield lo, hi
        lo = hi


def to_scipy(layout: StoredTiles) -> sp.csr_matrix:
    """The exact element mask as an n × n boolean CSR matrix (memory grows with active pairs)."""
    import scipy.sparse as sp

    parts = [element_rows(layout, lo, hi) for lo, hi in row_chunks(layout)]
    n = layout.grid.n
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((n, n), dtype=bool)


def to_dense(layout: StoredTiles) -> np.ndarray:
    """The exact element mask as an n × n boolean array."""
    require_static(layout)
    grid = layout.grid
    out = np.zeros((grid.row_tiles, grid.col_tiles, grid.block_m, grid.block_n), dtype=bool)
    r, c = layout.tile_rows(), layout.col_idx.astype(np.int64)
    out[r, c] = tile_masks(layout, r, c, layout.full)
    dense = out.transpose(0, 2, 1, 3).reshape(grid.row_tiles * grid.block_m, grid.col_tiles * grid.block_n)
    return dense[: grid.n, : grid.n]


def element_count(layout: StoredTiles) -> int:
    """Exact number of active (i, j) pairs."""
    require_static(layout)
    total = 0
    for lo, hi in row_chunks(layout, 1 << 16):
        a, b = layout.row_ptr[lo], layout.row_ptr[hi]
        total += _count_tiles(layout, layout.tile_rows()[a:b], layout.col_idx[a:b].astype(np.int64), layout.full[a:b])
    return total


def _count_tiles(layout: StoredTiles, r: np.ndarray, c: np.ndarray, full: np.ndarray) -> int:
    grid, rule = layout.grid, layout.fast_rule
    area = (grid.row_last(r) - grid.row_first(r) + 1) * (grid.col_last(c) - grid.col_first(c) + 1)
    total = int(area[full].sum())
    partial = np.flatnonzero(~full)
    if len(partial):
        first, inverse = tile_classes(rule, grid, r[partial], c[partial])
        counts = evaluate_tiles(rule, grid, r[partial][first], c[partial][first]).sum(axis=(1, 2))
        total += int(counts[inverse].sum())
    return total


#: Row tiles whose rows `empty_rows` checks at once (bounds its memory at any n).
EMPTY_ROWS_CHUNK = 1 << 18


def empty_rows(layout: StoredTiles) -> np.ndarray:
    """Query rows with no key at all (exact). Rows of a tile holding a full tile have keys.

    Other row tiles are first checked on their tiles about the diagonal, which give every
    row a key in most patterns; only rows still without one have all their tiles evaluated.
    Rows are handled as packed bits, in chunks of row tiles, so memory stays bounded at any n.
    """
    require_static(layout)
    grid, row_ptr = layout.grid, layout.row_ptr
    counts = np.diff(row_ptr)
    full_seen = np.concatenate([[0], np.cumsum(layout.full, dtype=np.int32)])
    has_full = full_seen[row_ptr[1:]] > full_seen[row_ptr[:-1]]
    bare = np.flatnonzero(counts == 0)
    empty = [ragged_ranges(grid.row_first(bare), grid.row_last(bare))[1]]
    doubtful = np.flatnonzero((counts > 0) & ~has_full)
    keys = grid.join(layout.tile_rows(), layout.col_idx) if len(doubtful) else None
    for lo in range(0, len(doubtful), EMPTY_ROWS_CHUNK):
        empty.append(_keyless_rows(layout, doubtful[lo : lo + EMPTY_ROWS_CHUNK], keys))
    return np.sort(np.concatenate(empty)).astype(np.int64)


def _keyless_rows(layout: StoredTiles, doubtful: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Query rows of the given row tiles (each storing a tile, none full) that have no key;
    only row tiles with a keyless row are unpacked from bits."""
    grid, row_ptr = layout.grid, layout.row_ptr
    missing = np.full((len(doubtful), grid.block_m // 8), 255, dtype=np.uint8)
    last = doubtful == grid.row_tiles - 1
    if last.any():
        missing[last] = np.packbits(np.arange(grid.block_m) < grid.n - grid.row_first(grid.row_tiles - 1))
    missing &= ~_rows_hit(layout, _about_diagonal(layout, doubtful, keys))
    again = np.flatnonzero(missing.any(axis=1))
    if not len(again):
        return np.empty(0, dtype=np.int64)
    rows = doubtful[again]
    missing = missing[again] & ~_rows_hit(layout, ragged_ranges(row_ptr[rows], row_ptr[rows + 1] - 1)[1])
    keyless = np.unpackbits(missing, axis=1).astype(bool)
    return (grid.row_first(rows)[:, None] + np.arange(grid.block_m)[None, :])[keyless]


def _about_diagonal(layout: StoredTiles, rows: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """CSR entries of the given row tiles (each storing some tile) that meet the columns of
    their rows, with one more on either side; sorted. `keys`: every entry's (row, column) key."""
    grid = layout.grid
    first = np.searchsorted(keys, grid.join(rows, grid.row_first(rows) // grid.block_n)) - 1
    last = np.searchsorted(keys, grid.join(rows, grid.row_last(rows) // grid.block_n), side="right")
    lo, hi = layout.row_ptr[rows], layout.row_ptr[rows + 1] - 1
    return ragged_ranges(np.clip(first, lo, hi), np.clip(last, lo, hi))[1]


def _word_type(nbytes: int) -> type[np.unsignedinteger]:
    """The widest unsigned integer whose size divides a row of `nbytes` packed bits."""
    return next(t for t in (np.uint64, np.uint32, np.uint16, np.uint8) if nbytes % np.dtype(t).itemsize == 0)


def _rows_hit(layout: StoredTiles, entries: np.ndarray) -> np.ndarray:
    """Per row tile of the sorted CSR entries, which of its query rows their tiles give a key (packed bits)."""
    grid, rule = layout.grid, layout.fast_rule
    r, c = layout.tile_rows()[entries], layout.col_idx[entries].astype(np.int64)
    first, inverse = tile_classes(rule, grid, r, c)
    hit_rows = evaluate_tiles(rule, grid, r[first], c[first]).any(axis=2)
    words = np.packbits(hit_rows, axis=1)
    words = np.ascontiguousarray(words).view(_word_type(words.shape[1]))[inverse]
    starts = np.flatnonzero(np.diff(r, prepend=-1))
    counts = np.diff(np.append(starts, len(r)))
    if counts.max(initial=0) <= 8:  # few tiles per row: OR them in a few whole-array steps
        out = words[starts]
        for k in range(1, int(counts.max(initial=0))):
            more = np.flatnonzero(counts > k)
            out[more] |= words[starts[more] + k]
    else:
        out = np.bitwise_or.reduceat(words, starts, axis=0)
    return out.view(np.uint8)
