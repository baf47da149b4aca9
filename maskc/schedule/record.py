"""A pass and a schedule: plain records of arrays, like the IR's layouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from maskc.rules import Rule

#: Elements evaluated at once when a pass's tiles are expanded to element masks.
_BATCH_ELEMENTS = 1 << 22


@dataclass(eq=False)
class Pass:
    """One block-sparse problem of a schedule, in its own token order.

    Pass row p is query `q_index[p]`, pass column q is key `k_index[q]` (original positions);
    the tables are block-CSR (and its transpose, block-CSC) over BLOCK_M × BLOCK_N tiles of the
    pass's own (rows, columns). `rule` holds for exactly this pass's pairs, on original positions.
    """

    #: "identity", "residue", "gathered keys" or "gathered queries".
    lowering: str
    #: Why the cost model chose it, in words.
    reason: str
    rule: Rule
    q_index: np.ndarray
    k_index: np.ndarray
    #: True where the pass keeps the original order of that side (no gather needed).
    q_identity: bool
    k_identity: bool
    block_m: int
    block_n: int
    row_ptr: np.ndarray
    col_idx: np.ndarray
    full: np.ndarray
    col_ptr: np.ndarray
    row_idx: np.ndarray
    full_t: np.ndarray
    csc_to_csr: np.ndarray
    #: The modulus of a residue order (positions grouped by i mod s), else 1.
    modulus: int = 1
    #: Tiled orders: the canvas box that makes one group of tokens.
    tile: tuple[int, ...] = ()
    #: The rule on the pass's own positions, when it has a closed form (a kernel's predicate then
    #: needs no position tables); None: kernels read `rule` through the position tables.
    local_rule: Rule | None = None
    #: Set on a chosen schedule's passes: the Triton kernels read its orders in place (maskc.schedule.axes),
    #: so its rows in another order are not copied (unless MASKC_TRITON_READ_IN_PLACE=0; the CPU
    #: backend gathers them).
    in_place: bool = False
    _tile_rows: np.ndarray | None = field(default=None, repr=False)

    @property
    def nq(self) -> int:
        return len(self.q_index)

    @property
    def nk(self) -> int:
        return len(self.k_index)

    @property
    def row_tiles(self) -> int:
        return -(-self.nq // self.block_m)

    @property
    def col_tiles(self) -> int:
        return -(-self.nk // self.block_n)

    @property
    def nnz(self) -> int:
        return len(self.col_idx)

    @property
    def grid(self) -> tuple[int, int, int, int]:
        """(rows, columns, BLOCK_M, BLOCK_N): passes with equal grids tile alike."""
        return (self.nq, self.nk, self.block_m, self.block_n)

    def tile_rows(self) -> np.ndarray:
        """Row tile of every CSR entry."""
        if self._tile_rows is None:
            self._tile_rows = np.repeat(np.arange(self.row_tiles, dtype=np.int64), np.diff(self.row_ptr))
        return self._tile_rows

    def tile_area(self) -> int:
        """(i, j) pairs the kernel computes for this pass: stored tiles, masked elements included."""
        rows = np.minimum(self.block_m, self.nq - self.tile_rows() * self.block_m)
        cols = np.minimum(self.block_n, self.nk - self.col_idx.astype(np.int64) * self.block_n)
        return int((rows * cols).sum())

    def gathered_rows(self) -> int:
        """Token rows the pass takes in an order of its own (queries, and keys with their values): copied
        into it, unless the kernels read the pass in place."""
        return (0 if self.q_identity else self.nq) + (0 if self.k_identity else self.nk)

    def tile_masks(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Element masks of stored tiles lo..hi (CSR order), shape (tiles, BLOCK_M, BLOCK_N).

        Full tiles are taken as full without evaluating the rule, as a kernel takes them, so a
        wrong full flag shows in every check built on this.
        """
        hi = self.nnz if hi is None else hi
        r, c, full = self.tile_rows()[lo:hi], self.col_idx[lo:hi].astype(np.int64), self.full[lo:hi]
        rows = r[:, None] * self.block_m + np.arange(self.block_m)[None, :]
        cols = c[:, None] * self.block_n + np.arange(self.block_n)[None, :]
        valid = (rows < self.nq)[:, :, None] & (cols < self.nk)[:, None, :]
        out = valid.copy()
        partial = np.flatnonzero(~full)
        if len(partial):
            qi = self.q_index[np.minimum(rows[partial], self.nq - 1)]
            kj = self.k_index[np.minimum(cols[partial], self.nk - 1)]
            out[partial] &= self.rule.mask(qi[:, :, None], kj[:, None, :])
        return out

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(query, key) original positions of every pair this pass computes, unmasked."""
        qs, ks = [], []
        step = max(1, _BATCH_ELEMENTS // (self.block_m * self.block_n))
        for lo in range(0, self.nnz, step):
            masks = self.tile_masks(lo, lo + step)
            t, x, y = np.nonzero(masks)
            r, c = self.tile_rows()[lo:][t], self.col_idx[lo:].astype(np.int64)[t]
            qs.append(self.q_index[r * self.block_m + x])
            ks.append(self.k_index[c * self.block_n + y])
        empty = np.zeros(0, dtype=np.int64)
        return (np.concatenate(qs), np.concatenate(ks)) if qs else (empty, empty)

    def dense_mask(self) -> np.ndarray:
        """(nq, nk) boolean mask in the pass's own coordinates (for small problems and tests)."""
        out = np.zeros((self.row_tiles * self.block_m, self.col_tiles * self.block_n), dtype=bool)
        masks = self.tile_masks()
        for t, (r, c) in enumerate(zip(self.tile_rows(), self.col_idx)):
            out[r * self.block_m : (r + 1) * self.block_m, c * self.block_n : (c + 1) * self.block_n] = masks[t]
        return out[: self.nq, : self.nk]

    def arrays(self) -> dict[str, np.ndarray]:
        """The tables a kernel reads, int32 (positions included: the predicate reads them)."""
        return {
            "q_index": self.q_index.astype(np.int32),
            "k_index": self.k_index.astype(np.int32),
            "row_ptr": self.row_ptr,
            "col_idx": self.col_idx,
            "full": self.full,
            "col_ptr": self.col_ptr,
            "row_idx": self.row_idx,
            "full_t": self.full_t,
            "csc_to_csr": self.csc_to_csr,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "lowering": self.lowering,
            "modulus": self.modulus,
            "tile": list(self.tile),
            "reason": self.reason,
            "rule": self.rule.describe(),
            "queries": self.nq,
            "keys": self.nk,
            "queries_gathered": not self.q_identity,
            "keys_gathered": not self.k_identity,
            "tiles_stored": self.nnz,
            "tiles_full": int(self.full.sum()),
            "kernel_work": self.tile_area(),
            "gathered_rows": self.gathered_rows(),
            "read_in_place": self.in_place,
        }

    @property
    def label(self) -> str:
        """The lowering with its modulus or tile, e.g. "residue mod 128", "tiled 8x8"."""
        tile = f" {'x'.join(map(str, self.tile))}" if self.tile else ""
        return self.lowering + (f" mod {self.modulus}" if self.modulus > 1 else "") + tile

    def describe(self) -> str:
        return (
            f"{self.label}: {self.nq} x {self.nk}, {self.nnz:,} tiles ({int(self.full.sum()):,} full), "
            f"work {self.tile_area():,} pairs, {self.gathered_rows():,} rows "
            + ("read in place" if self.in_place else "gathered")
        )


@dataclass(eq=False)
class Schedule:
    """The passes of one head pattern, and the figures the cost model chose them by."""

    passes: tuple[Pass, ...]
    #: "single" or "auto": what was asked for.
    mode: str
    #: Predicted work of the single pass in token order, for comparison.
    single_work: int
    #: Predicted work of this schedule: kernel work plus gathers at their pair-equivalent cost.
    predicted_work: int
    #: One line per lowering considered, with its predicted work and the verdict.
    considered: tuple[str, ...] = ()

    #: (BLOCK_M, BLOCK_N) of the IR layout this schedules.
    layout_tile: tuple[int, int] = (0, 0)

    @property
    def single(self) -> bool:
        """One pass in token order on the layout's own tiles: the IR layout itself."""
        p = self.passes[0]
        return len(self.passes) == 1 and p.lowering == "identity" and (p.block_m, p.block_n) == self.layout_tile

    def kernel_work(self) -> int:
        """(i, j) pairs the kernels compute, masked ones included, summed over passes."""
        return sum(p.tile_area() for p in self.passes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "kernel_work": self.kernel_work(),
            "predicted_work": self.predicted_work,
            "single_work": self.single_work,
            "passes": [p.as_dict() for p in self.passes],
        }
