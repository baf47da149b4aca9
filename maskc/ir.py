"""The block-sparse IR: block-CSR per distinct head pattern, its transpose, and the element rule.

Like FlexAttention's BlockMask it is a plain record of int32 arrays that prints, saves and
goes to a kernel as is. Unlike it, partial tiles carry an exact rule (a predicate tree from
the spec), not a closure, so analyses and code generation can read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from maskc.errors import BackendError, DynamicPatternError, TooLargeError
from maskc.grid import TileGrid, ragged_ranges, transposed
from maskc.rule import Rule, TileClass, evaluate_tiles, tile_classes
from maskc.simplify import layout_rule

if TYPE_CHECKING:
    from maskc.spec import Spec
    from maskc.stats import PatternStats

#: Largest n for which `to_dense` builds an n × n array unless told otherwise.
DENSE_LIMIT = 16384
#: Tiles whose elements are materialized at once by `element_rows`.
_TILES_PER_CHUNK = 4096
#: A layout is read off whole-grid maps when the grid has at most this many tiles per tile the
#: rule estimates: the maps' memory then stays proportional to what tile lists would take. At 4,
#: a quarter-full random map already compresses slower than its tile list sorts (measured).
_GRID_MAP_RATIO = 2


def _csr_pointers(owner: np.ndarray, count: int) -> np.ndarray:
    return _pointers(np.bincount(owner, minlength=count))


def _pointers(counts: np.ndarray) -> np.ndarray:
    """Offsets of consecutive runs of the given lengths, with the total last."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)


def _stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """Stable argsort; radix sort (linear time) when the keys fit in 16 bits."""
    if bound <= np.iinfo(np.uint16).max:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


@dataclass(eq=False)
class BlockLayout:
    """One head pattern: which tiles are stored (CSR and CSC), which are full, and the rule."""

    grid: TileGrid
    rule: Rule
    row_ptr: np.ndarray
    col_idx: np.ndarray
    full: np.ndarray
    col_ptr: np.ndarray
    row_idx: np.ndarray
    full_t: np.ndarray
    #: CSC entry k is CSR entry csc_to_csr[k].
    csc_to_csr: np.ndarray
    _element_count: int | None = field(default=None, repr=False)
    _tile_rows: np.ndarray | None = field(default=None, repr=False)
    _fast_rule: Rule | None = field(default=None, repr=False)

    @classmethod
    def build(cls, rule: Rule, grid: TileGrid) -> BlockLayout:
        """Layout of `rule`; a dynamic rule is laid out by its static lower bound."""
        static = layout_rule(rule.static_bound(lower=True) if rule.dynamic else rule)
        if grid.row_tiles * grid.col_tiles <= _GRID_MAP_RATIO * static.estimate(grid):
            return cls._from_maps(rule, grid, static.grid_classes(grid))
        return cls._from_tiles(rule, grid, *static.tiles(grid))

    @classmethod
    def _from_maps(cls, rule: Rule, grid: TileGrid, tiles: TileClass) -> BlockLayout:
        """CSR and CSC read off (row_tiles, col_tiles) maps: no sort and no per-tile index arithmetic."""
        stored, stored_t = tiles.any, transposed(tiles.any)
        csr_index = np.cumsum(stored, dtype=np.int32).reshape(stored.shape) - 1
        return cls(
            grid=grid,
            rule=rule,
            row_ptr=_pointers(stored.sum(axis=1)),
            col_idx=np.broadcast_to(np.arange(grid.col_tiles, dtype=np.int32), stored.shape)[stored],
            full=tiles.full[stored],
            col_ptr=_pointers(stored.sum(axis=0)),
            row_idx=np.broadcast_to(np.arange(grid.row_tiles, dtype=np.int32), stored_t.shape)[stored_t],
            full_t=transposed(tiles.full)[stored_t],
            csc_to_csr=transposed(csr_index)[stored_t],
        )

    @classmethod
    def _from_tiles(cls, rule: Rule, grid: TileGrid, r: np.ndarray, c: np.ndarray, full: np.ndarray) -> BlockLayout:
        """CSR from tiles sorted by (row, column); CSC by a stable sort on the column."""
        order = _stable_order(c, grid.col_tiles)
        return cls(
            grid=grid,
            rule=rule,
            row_ptr=_csr_pointers(r, grid.row_tiles),
            col_idx=c.astype(np.int32),
            full=full.astype(bool),
            col_ptr=_csr_pointers(c, grid.col_tiles),
            row_idx=r[order].astype(np.int32),
            full_t=full[order].astype(bool),
            csc_to_csr=order.astype(np.int32),
        )

    @property
    def nnz(self) -> int:
        return len(self.col_idx)

    @property
    def full_count(self) -> int:
        return int(self.full.sum())

    @property
    def fast_rule(self) -> Rule:
        """The element rule in its fastest equivalent form, for evaluating elements here."""
        if self._fast_rule is None:
            self._fast_rule = layout_rule(self.rule)
        return self._fast_rule

    def tile_rows(self) -> np.ndarray:
        """Row tile of every CSR entry (computed once)."""
        if self._tile_rows is None:
            self._tile_rows = np.repeat(np.arange(self.grid.row_tiles, dtype=np.int64), np.diff(self.row_ptr))
        return self._tile_rows

    def split(self) -> dict[str, np.ndarray]:
        """FlexAttention-style tables: per row (and per column) counts and indices, full and partial apart."""
        rows, cols = self.tile_rows(), self.col_idx.astype(np.int64)
        cols_t = np.repeat(np.arange(self.grid.col_tiles, dtype=np.int64), np.diff(self.col_ptr))
        out = {}
        for name, keep, keep_t in (("full", self.full, self.full_t), ("partial", ~self.full, ~self.full_t)):
            out[f"{name}_row_ptr"] = _csr_pointers(rows[keep], self.grid.row_tiles)
            out[f"{name}_col_idx"] = cols[keep].astype(np.int32)
            out[f"{name}_col_ptr"] = _csr_pointers(cols_t[keep_t], self.grid.col_tiles)
            out[f"{name}_row_idx"] = self.row_idx[keep_t]
        return out

    def _require_static(self) -> None:
        if self.rule.dynamic:
            inputs = sorted({getattr(leaf, "decided_by", "q and k") for leaf in self.rule.leaves() if leaf.dynamic})
            raise DynamicPatternError(
                f"the pattern has a part decided at run time ({self.rule.describe()}); "
                f"its elements are known only after resolving it with {' and '.join(inputs)}"
            )

    def _tile_masks(self, r: np.ndarray, c: np.ndarray, full: np.ndarray) -> np.ndarray:
        """Element masks of the given stored tiles, evaluating one tile per signature class."""
        grid = self.grid
        rows = np.arange(grid.block_m)[None, :, None] + grid.row_first(r)[:, None, None]
        cols = np.arange(grid.block_n)[None, None, :] + grid.col_first(c)[:, None, None]
        masks = (rows < grid.n) & (cols < grid.n)
        partial = np.flatnonzero(~full)
        if len(partial):
            first, inverse = tile_classes(self.fast_rule, grid, r[partial], c[partial])
            reps = evaluate_tiles(self.fast_rule, grid, r[partial][first], c[partial][first])
            masks[partial] = reps[inverse]
        return masks

    def element_rows(self, row_tile_lo: int, row_tile_hi: int) -> sp.csr_matrix:
        """Element-level CSR of query rows in tiles [lo, hi), shape (rows, n).

        Written in CSR order directly: stored tiles are sorted by (row tile, column), so the
        elements ordered by (row tile, row within tile, tile, column within tile) are sorted by
        (row, column) already, and no sort of the elements is needed.
        """
        self._require_static()
        grid = self.grid
        bm, bn = grid.block_m, grid.block_n
        a, b = self.row_ptr[row_tile_lo], self.row_ptr[row_tile_hi]
        r = self.tile_rows()[a:b]
        c, full = self.col_idx[a:b].astype(np.int64), self.full[a:b]
        masks = self._tile_masks(r, c, full).reshape(-1, bn)
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

    def row_chunks(self, tiles_per_chunk: int = _TILES_PER_CHUNK) -> Iterator[tuple[int, int]]:
        """Row-tile ranges holding about `tiles_per_chunk` stored tiles each."""
        lo = 0
        while lo < self.grid.row_tiles:
            target = self.row_ptr[lo] + tiles_per_chunk
            hi = int(np.searchsorted(self.row_ptr, target, side="right")) - 1
            hi = min(max(hi, lo + 1), self.grid.row_tiles)
            yield lo, hi
            lo = hi

    def to_scipy(self) -> sp.csr_matrix:
        """The exact element mask as an n × n boolean CSR matrix (memory grows with active pairs)."""
        parts = [self.element_rows(lo, hi) for lo, hi in self.row_chunks()]
        return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((self.grid.n, self.grid.n), dtype=bool)

    def to_dense(self) -> np.ndarray:
        self._require_static()
        grid = self.grid
        out = np.zeros((grid.row_tiles, grid.col_tiles, grid.block_m, grid.block_n), dtype=bool)
        r, c = self.tile_rows(), self.col_idx.astype(np.int64)
        out[r, c] = self._tile_masks(r, c, self.full)
        dense = out.transpose(0, 2, 1, 3).reshape(grid.row_tiles * grid.block_m, grid.col_tiles * grid.block_n)
        return dense[: grid.n, : grid.n]

    def element_count(self) -> int:
        """Exact number of active (i, j) pairs."""
        if self._element_count is None:
            self._require_static()
            total = 0
            for lo, hi in self.row_chunks(1 << 16):
                a, b = self.row_ptr[lo], self.row_ptr[hi]
                total += self._count_tiles(self.tile_rows()[a:b], self.col_idx[a:b].astype(np.int64), self.full[a:b])
            self._element_count = total
        return self._element_count

    def _count_tiles(self, r: np.ndarray, c: np.ndarray, full: np.ndarray) -> int:
        grid = self.grid
        area = (grid.row_last(r) - grid.row_first(r) + 1) * (grid.col_last(c) - grid.col_first(c) + 1)
        total = int(area[full].sum())
        partial = np.flatnonzero(~full)
        if len(partial):
            first, inverse = tile_classes(self.fast_rule, grid, r[partial], c[partial])
            counts = evaluate_tiles(self.fast_rule, grid, r[partial][first], c[partial][first]).sum(axis=(1, 2))
            total += int(counts[inverse].sum())
        return total

    def empty_rows(self) -> np.ndarray:
        """Query rows with no key at all (exact). Rows of a tile holding a full tile have keys.

        Other row tiles are first checked on their tiles about the diagonal, which give every
        row a key in most patterns; only rows still without one have all their tiles evaluated.
        """
        self._require_static()
        grid = self.grid
        counts = np.diff(self.row_ptr)
        full_seen = np.concatenate([[0], np.cumsum(self.full, dtype=np.int32)])
        has_full = full_seen[self.row_ptr[1:]] > full_seen[self.row_ptr[:-1]]
        bare = np.flatnonzero(counts == 0)
        empty = [ragged_ranges(grid.row_first(bare), grid.row_last(bare))[1]]
        doubtful = np.flatnonzero((counts > 0) & ~has_full)
        if len(doubtful):
            index = grid.row_first(doubtful)[:, None] + np.arange(grid.block_m)[None, :]
            keyless = (index < grid.n) & ~self._rows_hit(self._about_diagonal(doubtful))
            again = np.flatnonzero(keyless.any(axis=1))
            if len(again):
                rows = doubtful[again]
                keyless[again] &= ~self._rows_hit(ragged_ranges(self.row_ptr[rows], self.row_ptr[rows + 1] - 1)[1])
            empty.append(index[keyless])
        return np.sort(np.concatenate(empty)).astype(np.int64)

    def _about_diagonal(self, rows: np.ndarray) -> np.ndarray:
        """CSR entries of the given row tiles (each storing some tile) that meet the columns of
        their rows, with one more on either side; sorted."""
        grid = self.grid
        keys = grid.join(self.tile_rows(), self.col_idx)
        first = np.searchsorted(keys, grid.join(rows, grid.row_first(rows) // grid.block_n)) - 1
        last = np.searchsorted(keys, grid.join(rows, grid.row_last(rows) // grid.block_n), side="right")
        lo, hi = self.row_ptr[rows], self.row_ptr[rows + 1] - 1
        return ragged_ranges(np.clip(first, lo, hi), np.clip(last, lo, hi))[1]

    def _rows_hit(self, entries: np.ndarray) -> np.ndarray:
        """Per row tile of the sorted CSR entries, which of its query rows their tiles give a key."""
        grid = self.grid
        r, c = self.tile_rows()[entries], self.col_idx[entries].astype(np.int64)
        first, inverse = tile_classes(self.fast_rule, grid, r, c)
        hit_rows = evaluate_tiles(self.fast_rule, grid, r[first], c[first]).any(axis=2)
        bits = np.packbits(hit_rows, axis=1)[inverse]
        starts = np.flatnonzero(np.diff(r, prepend=-1))
        return np.unpackbits(np.bitwise_or.reduceat(bits, starts, axis=0), axis=1)[:, : grid.block_m].astype(bool)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "row_ptr": self.row_ptr,
            "col_idx": self.col_idx,
            "full": self.full,
            "col_ptr": self.col_ptr,
            "row_idx": self.row_idx,
            "full_t": self.full_t,
            "csc_to_csr": self.csc_to_csr,
        }

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())

    def __repr__(self) -> str:
        g = self.grid
        total = g.row_tiles * g.col_tiles
        return (
            f"BlockLayout(n={g.n}, tile={g.block_m}x{g.block_n}, tiles={g.row_tiles}x{g.col_tiles}, "
            f"stored={self.nnz} ({self.nnz / total:.2%}), full={self.full_count}, "
            f"partial={self.nnz - self.full_count}, rule={self.rule.describe()})"
        )


@dataclass(eq=False)
class CompiledPattern:
    """A spec compiled for one sequence length, tile shape and head count."""

    spec: Spec
    spec_hash: str
    n: int
    block_m: int
    block_n: int
    heads: int
    layouts: tuple[BlockLayout, ...]
    #: For each head, the index of its layout in `layouts` (heads with one pattern share one).
    head_layout: np.ndarray
    _tensors: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def grid(self) -> TileGrid:
        return self.layouts[0].grid

    @property
    def per_head(self) -> bool:
        """True when heads may differ: the spec has head_patterns, or heads were resolved one by one."""
        return bool(self.spec.head_patterns) or len(self.layouts) > 1

    @property
    def dynamic(self) -> bool:
        return any(layout.rule.dynamic for layout in self.layouts)

    def layout_of_head(self, head: int) -> BlockLayout:
        return self.layouts[int(self.head_layout[head])]

    def stats(self) -> PatternStats:
        from maskc.stats import pattern_stats

        return pattern_stats(self)

    def to_dense(self, limit: int = DENSE_LIMIT) -> np.ndarray:
        """Boolean (n, n) mask, or (heads, n, n) when the spec has head_patterns."""
        if self.n > limit:
            raise TooLargeError(
                f"to_dense at n = {self.n} needs {self.n * self.n / 2**30:.1f} GiB per head; "
                f"the limit is n = {limit} (pass limit= to raise it, or use to_scipy())"
            )
        dense = [layout.to_dense() for layout in self.layouts]
        if not self.per_head:
            return dense[0]
        return np.stack([dense[k] for k in self.head_layout])

    def to_scipy(self) -> sp.csr_matrix | list[sp.csr_matrix]:
        """Element-level CSR (n × n), or a list with one per head when the spec has head_patterns."""
        mats = [layout.to_scipy() for layout in self.layouts]
        return [mats[k] for k in self.head_layout] if self.per_head else mats[0]

    def to_torch(self, device: Any = "cpu") -> dict[str, Any]:
        """Every layout's int32 tables as torch tensors on `device`, cached per device.

        Keys are "<layout>.<table>", e.g. "0.row_ptr", plus "head_layout".
        """
        import torch

        try:
            key = str(torch.device(device))
            if key not in self._tensors:
                self._tensors[key] = self._tables_on(torch.device(device))
        except (RuntimeError, AssertionError, TypeError) as err:
            raise BackendError(f"cannot place the IR's tables on device {device!r}: {err}") from None
        return self._tensors[key]

    def _tables_on(self, device: Any) -> dict[str, Any]:
        import torch

        tables = {"head_layout": torch.as_tensor(self.head_layout, device=device)}
        for k, layout in enumerate(self.layouts):
            for name, array in {**layout.arrays(), **layout.split()}.items():
                tables[f"{k}.{name}"] = torch.as_tensor(np.ascontiguousarray(array), device=device)
        return tables

    def save(self, path: Any) -> None:
        from maskc.irfile import save_pattern

        save_pattern(self, path)

    @staticmethod
    def load(path: Any) -> CompiledPattern:
        from maskc.irfile import load_pattern

        return load_pattern(path)

    def __repr__(self) -> str:
        lines = [
            f"CompiledPattern({self.spec.name!r}, n={self.n}, tile={self.block_m}x{self.block_n}, "
            f"heads={self.heads}, causal={self.spec.causal}, dynamic={self.dynamic}, hash={self.spec_hash})"
        ]
        for k, layout in enumerate(self.layouts):
            heads = np.flatnonzero(self.head_layout == k).tolist()
            lines.append(f"  heads {heads}: {layout!r}")
        return "\n".join(lines)
