"""A chunk of query rows ready to compute: its element CSR, and where each element sits in its tile.

Scores are sampled dense-dense products: the stored tiles of the chunk are multiplied as dense
BLOCK_M × BLOCK_N blocks by one batched matmul, and each element of the CSR picks its value
at `slot`, its flat position in those products. That keeps the arithmetic in BLAS while the
softmax and the products with V run on the exact element CSR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from maskc.ir import BlockLayout

#: Bytes held per element of a stored tile while a chunk is processed: the IR's element CSR
#: construction (tile masks, their coordinates, COO → CSR), the plan (column, slot) and the
#: per-element arrays of a backward step (tile products, scores, probabilities, their gradients).
_BYTES_PER_TILE_ELEMENT = 64
_VALUE_ARRAYS = 6


@dataclass(frozen=True, eq=False)
class ChunkPlan:
    """Query rows [row_lo, row_hi) of one layout: element CSR plus the tile of each element."""

    row_lo: int
    row_hi: int
    n: int
    indptr: np.ndarray
    indices: np.ndarray
    #: Row tile and key tile of each stored tile of the chunk (absolute indices).
    tile_rows: np.ndarray
    tile_cols: np.ndarray
    #: Flat index of each element into the (tiles, BLOCK_M, BLOCK_N) tile products.
    slot: np.ndarray
    #: Rows (relative to row_lo) with at least one key, and their first element and count.
    rows: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def matrix(self, values: np.ndarray) -> sp.csr_array:
        """The chunk's CSR (rows × n) holding `values` at its elements."""
        return sp.csr_array((values, self.indices, self.indptr), shape=(self.row_hi - self.row_lo, self.n))

    def sampled_products(self, left_tiles: np.ndarray, right_tiles: np.ndarray) -> np.ndarray:
        """left[i] · right[j] at every element (i, j), from (row tiles, BM, D) and (key tiles, BN, D)."""
        products = np.matmul(left_tiles[self.tile_rows], right_tiles[self.tile_cols].transpose(0, 2, 1))
        return np.take(products.reshape(-1), self.slot)

    def per_element(self, row_values: np.ndarray) -> np.ndarray:
        """Spread one value per row (indexed by row relative to row_lo) over that row's elements."""
        return np.repeat(row_values[self.rows], self.counts)

    def nbytes(self) -> int:
        arrays = (self.indptr, self.indices, self.slot, self.rows, self.starts, self.counts)
        return sum(a.nbytes for a in (*arrays, self.tile_rows, self.tile_cols))


def tiles_per_chunk(layout: BlockLayout, width: int, itemsize: int, budget: int) -> int:
    """Stored tiles per chunk such that one step holds about `budget` bytes (at least one row tile)."""
    grid = layout.grid
    per_tile = grid.block_m * grid.block_n * (_BYTES_PER_TILE_ELEMENT + _VALUE_ARRAYS * itemsize)
    per_tile += (grid.block_m + grid.block_n) * width * itemsize
    return max(1, budget // per_tile)


def build_plan(layout: BlockLayout, tile_lo: int, tile_hi: int) -> ChunkPlan:
    """The plan of row tiles [tile_lo, tile_hi) of a static layout."""
    grid = layout.grid
    elements = layout.element_rows(tile_lo, tile_hi)
    index_type = np.int32 if elements.nnz < 2**31 else np.int64
    indptr = elements.indptr.astype(index_type, copy=False)
    indices = elements.indices.astype(index_type, copy=False)
    counts = np.diff(indptr)
    rows = np.flatnonzero(counts)
    a, b = layout.row_ptr[tile_lo], layout.row_ptr[tile_hi]
    tile_rows = layout.tile_rows()[a:b]
    tile_cols = layout.col_idx[a:b].astype(np.int64)
    return ChunkPlan(
        row_lo=tile_lo * grid.block_m,
        row_hi=min(tile_hi * grid.block_m, grid.n),
        n=grid.n,
        indptr=indptr,
        indices=indices,
        tile_rows=tile_rows,
        tile_cols=tile_cols,
        slot=_slots(layout, tile_lo, tile_rows, tile_cols, counts, indices),
        rows=rows,
        starts=indptr[rows],
        counts=counts[rows],
    )


def _slots(
    layout: BlockLayout,
    tile_lo: int,
    tile_rows: np.ndarray,
    tile_cols: np.ndarray,
    counts: np.ndarray,
    indices: np.ndarray,
) -> np.ndarray:
    """Flat position of each element in the tile products: tile * BM * BN + row_in_tile * BN + col_in_tile."""
    grid = layout.grid
    area = grid.block_m * grid.block_n
    table_size = int(tile_rows[-1] - tile_lo + 1) * grid.col_tiles if len(tile_rows) else 0
    dtype = np.int32 if max(len(tile_rows) * area, table_size, grid.n) < 2**31 else np.int64
    row = np.repeat(np.arange(len(counts), dtype=dtype), counts)
    col = indices.astype(dtype, copy=False)
    tile = row // grid.block_m
    tile *= dtype(grid.col_tiles)
    tile += col // grid.block_n
    tile_keys = (tile_rows - tile_lo) * grid.col_tiles + tile_cols
    if table_size <= len(tile):
        # a dense (row tile, key tile) → tile table is cheaper than a search when it is no larger than the CSR
        table = np.zeros(table_size, dtype=dtype)
        table[tile_keys] = np.arange(len(tile_keys), dtype=dtype)
        tile = table[tile]
    else:
        tile = np.searchsorted(tile_keys, tile).astype(dtype)
    tile *= dtype(area)
    row %= grid.block_m
    row *= dtype(grid.block_n)
    tile += row
    tile += col % grid.block_n
    return tile


def as_tiles(x: np.ndarray, block: int) -> np.ndarray:
    """(B, H, N, D) → (B, H, tiles, block, D), zero-padded to whole tiles (a view when N is a multiple)."""
    pad = -x.shape[2] % block
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0)))
    return x.reshape(x.shape[0], x.shape[1], -1, block, x.shape[3])
