"""The block-sparse IR: block-CSR per distinct head pattern, its transpose, and the element rule.

Like FlexAttention's BlockMask it is a plain record of int32 arrays that prints, saves and
goes to a kernel as is. Unlike it, partial tiles carry an exact rule (a predicate tree from
the spec), not a closure, so analyses and code generation can read it.

This module is the record only. Layouts are built by `maskc.ir.build`; the element-level
methods (`to_dense`, `to_scipy`, `element_count`, `empty_rows`, ...) call `maskc.ir.elements`,
`save`/`load` call `maskc.ir.irfile`, and `stats` calls `maskc.stats`: all of those read
the record's fields and never import it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from maskc.errors import BackendError, IRFileError, MaskcError, TooLargeError
from maskc.grid import TileGrid
from maskc.ir import elements
from maskc.ir.irfile import check_tables, read_pattern_file, save_pattern
from maskc.lowering import lower_pattern, pattern_path
from maskc.rules import LabelRule, Rule, SelectedBlocksRule, layout_rule
from maskc.spec import Spec
from maskc.stats import PatternStats, pattern_stats

#: Rules that hold one call's resolution (documents, cluster labels, top-k selections).
RESOLVED = (LabelRule, SelectedBlocksRule)
if TYPE_CHECKING:
    import scipy.sparse as sp

#: Largest n for which `to_dense` builds an n × n array unless told otherwise.
DENSE_LIMIT = 16384


def csr_pointers(owner: np.ndarray, count: int) -> np.ndarray:
    """CSR row pointers of entries owned by rows `owner` (sorted), over `count` rows."""
    return pointers(np.bincount(owner, minlength=count))


def pointers(counts: np.ndarray) -> np.ndarray:
    """Offsets of consecutive runs of the given lengths, with the total last."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)


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
        """Row tile of every CSR entry (computed once; read-only)."""
        if self._tile_rows is None:
            self._tile_rows = np.repeat(np.arange(self.grid.row_tiles, dtype=np.int64), np.diff(self.row_ptr))
            self._tile_rows.flags.writeable = False
        return self._tile_rows

    def split(self) -> dict[str, np.ndarray]:
        """FlexAttention-style tables: per row (and per column) counts and indices, full and partial apart."""
        rows, cols = self.tile_rows(), self.col_idx.astype(np.int64)
        cols_t = np.repeat(np.arange(self.grid.col_tiles, dtype=np.int64), np.diff(self.col_ptr))
        out = {}
        for name, keep, keep_t in (("full", self.full, self.full_t), ("partial", ~self.full, ~self.full_t)):
            out[f"{name}_row_ptr"] = csr_pointers(rows[keep], self.grid.row_tiles)
            out[f"{name}_col_idx"] = cols[keep].astype(np.int32)
            out[f"{name}_col_ptr"] = csr_pointers(cols_t[keep_t], self.grid.col_tiles)
            out[f"{name}_row_idx"] = self.row_idx[keep_t]
        return out

    def element_rows(self, row_tile_lo: int, row_tile_hi: int) -> sp.csr_matrix:
        """Element-level CSR of query rows in tiles [lo, hi), shape (rows, n)."""
        return elements.element_rows(self, row_tile_lo, row_tile_hi)

    def row_chunks(self, tiles_per_chunk: int = elements.TILES_PER_CHUNK) -> Iterator[tuple[int, int]]:
        """Row-tile ranges holding about `tiles_per_chunk` stored tiles each."""
        return elements.row_chunks(self, tiles_per_chunk)

    def to_scipy(self) -> sp.csr_matrix:
        """The exact element mask as an n × n boolean CSR matrix (memory grows with active pairs)."""
        return elements.to_scipy(self)

    def to_dense(self) -> np.ndarray:
        """The exact element mask as an n × n boolean array."""
        return elements.to_dense(self)

    def element_count(self) -> int:
        """Exact number of active (i, j) pairs (computed once)."""
        if self._element_count is None:
            self._element_count = elements.element_count(self)
        return self._element_count

    def empty_rows(self) -> np.ndarray:
        """Query rows with no key at all (exact)."""
        return elements.empty_rows(self)

    def freeze(self) -> None:
        """Make the tables read-only, so that a cached layout cannot be changed through them."""
        for array in self.arrays().values():
            array.flags.writeable = False

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
    #: How backends run it: "single" (one pass in token order) or "auto" (`maskc.schedule`).
    schedule_mode: str = "single"
    _tensors: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    #: Schedules by mode, filled by `maskc.schedule.schedule_of`.
    _schedules: dict[str, Any] = field(default_factory=dict, repr=False)

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

    @property
    def run_time_parts(self) -> str:
        """The parts decided at run time, described ("" for a static pattern): what errors name."""
        leaves = {leaf for layout in self.layouts for leaf in layout.rule.leaves() if leaf.dynamic}
        return ", ".join(sorted({leaf.describe() for leaf in leaves}))

    def freeze(self) -> None:
        """Make every table read-only (the compile cache hands the same pattern to every caller)."""
        for layout in self.layouts:
            layout.freeze()
        self.head_layout.flags.writeable = False

    def layout_of_head(self, head: int) -> BlockLayout:
        return self.layouts[int(self.head_layout[head])]

    def stats(self) -> PatternStats:
        return pattern_stats(self)

    def to_dense(self, limit: int = DENSE_LIMIT) -> np.ndarray:
        """Boolean (n, n) mask, or (heads, n, n) when the spec has head_patterns (refused past limit² elements)."""
        if self.n > limit:
            raise TooLargeError(
                f"to_dense at n = {self.n} needs {self.n * self.n / 2**30:.1f} GiB per head; "
                f"the limit is n = {limit} (pass limit= to raise it, or use to_scipy())"
            )
        if self.per_head and self.heads * self.n * self.n > limit * limit:
            raise TooLargeError(
                f"to_dense of {self.heads} heads at n = {self.n} needs {self.heads * self.n * self.n / 2**30:.1f} GiB, "
                f"past the {limit * limit / 2**30:.2f} GiB of one n = {limit} mask (pass limit= to raise it); "
                "`layouts[k].to_dense()` gives each distinct pattern once, `head_layout` which head uses it"
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

        # copies: the tables are read-only, and a tensor must own writable memory
        tables = {"head_layout": torch.as_tensor(np.array(self.head_layout), device=device)}
        for k, layout in enumerate(self.layouts):
            for name, array in {**layout.arrays(), **layout.split()}.items():
                tables[f"{k}.{name}"] = torch.as_tensor(np.array(array, order="C"), device=device)
        return tables

    def save(self, path: Any) -> None:
        """Write the pattern; loading lowers its rules again from the spec, so a pattern resolved for one
        call (its documents, or its clusters and top-k from q and k) cannot be saved: it would come
        back unresolved."""
        resolved = [leaf for layout in self.layouts for leaf in layout.rule.leaves() if isinstance(leaf, RESOLVED)]
        if resolved:
            raise MaskcError(
                f"pattern {self.spec.name!r} is resolved for one call ({resolved[0].describe()}); save the pattern "
                "before documents, q or k resolve it"
            )
        save_pattern(self, path)

    @staticmethod
    def load(path: Any) -> CompiledPattern:
        """A saved pattern, its element rules lowered again from the stored spec and every table
        checked against them (IRFileError when anything differs)."""
        saved = read_pattern_file(path)
        spec, grid = saved.spec, saved.grid
        layouts = []
        for k, (node, tables) in enumerate(zip(saved.patterns, saved.layouts)):
            try:
                rule = lower_pattern(spec, node, grid.n, pattern_path(spec, node))
            except MaskcError as err:
                raise IRFileError(path, f"the stored spec does not compile as saved: {err}") from None
            check_tables(path, k, rule, grid, tables)
            layouts.append(BlockLayout(grid=grid, rule=rule, **tables))
        return CompiledPattern(
            spec=spec,
            spec_hash=saved.spec_hash,
            n=grid.n,
            block_m=grid.block_m,
            block_n=grid.block_n,
            heads=saved.heads,
            layouts=tuple(layouts),
            head_layout=saved.head_layout,
        )

    def __repr__(self) -> str:
        lines = [
            f"CompiledPattern({self.spec.name!r}, n={self.n}, tile={self.block_m}x{self.block_n}, "
            f"heads={self.heads}, causal={self.spec.causal}, dynamic={self.dynamic}, hash={self.spec_hash})"
        ]
        for k, layout in enumerate(self.layouts):
            heads = np.flatnonzero(self.head_layout == k).tolist()
            lines.append(f"  heads {heads}: {layout!r}")
        return "\n".join(lines)
