"""A pass's token order as a reordering of axes, when it is one: gathered by a view and one copy.

The orders the lowering passes use most are axis reorderings of the positions 0 … n − 1: a residue
order (positions grouped by i mod s, n = r·s) reads the positions as an (r, s) array and walks it
column by column; a tiled order of a row-major grid reads them as (H/th, th, W/tw, tw) and walks
(H/th, W/tw, th, tw). Gathering rows by such an order with an index (`index_select`) runs torch's
generic gather, and its backward a scatter-add (`index_add_`): measured on an H200 for the strided
pattern's residue pass at n = 32768 (bf16, H = 16, D = 128), 0.86 ms for the three forward gathers
and 1.9 ms for their backward, more than the pass's kernels (bench/NOTES.md). As a view of q (B, H,
n, D) split into those axes, permuted, then flattened, the same gather is one strided copy, and its
gradient another.

Lemma. Let p be a sequence of n integers with p[0] = 0. Read the pass position i in a mixed radix
of sizes m_1 (fastest), m_2, …, m_k with m_1 ⋯ m_k = n, digits d_1(i), …, d_k(i). If
p(i) = Σ_j d_j(i) · c_j for all i, and the strides c_j, ordered decreasingly, are those of a
contiguous array (the smallest is 1, each next one is the previous times its size), then p is the
order of the axes of that array, and the gather is `x.unflatten(2, sizes by decreasing stride)`
permuted into the pass's digit order, flattened.

Proof sketch. The strides decide the source array: with sizes in decreasing stride order, its
element at multi-index e has offset Σ e_j · c_j, which is p's formula with e = the digits; the
permutation puts the axes in the pass's digit order (slowest first), and flattening walks them
with the last fastest, which is the mixed-radix reading of i. ∎

`axis_order` finds the digits greedily, each the longest run of a constant step along the
positions one digit slower, and then checks p against the formula in full (numpy, once per pattern
and device), so an order it returns is exact, and any other order keeps the index gather.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class AxisOrder:
    """Positions read as an array of `dims` (slowest first, contiguous), its axes walked in `perm`."""

    dims: tuple[int, ...]
    perm: tuple[int, ...]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, n, D) with its rows in this order: one strided copy (a view where x's strides allow)."""
        k = len(self.dims)
        view = x.unflatten(2, self.dims).permute(0, 1, *(2 + a for a in self.perm), 2 + k)
        return view.flatten(2, 1 + k)


def axis_order(p: np.ndarray) -> AxisOrder | None:
    """The axis reordering that `p` (pass position → original position) is, or None.

    None also for the identity and for sequences that are not permutations of 0 … n − 1 laid out
    so (a gathered subset, text tokens after a grid): those keep the index gather.
    """
    p = np.asarray(p, dtype=np.int64)
    n = len(p)
    if n < 2 or p[0] != 0:
        return None
    sizes, steps = _digits(p)
    if sizes is None or len(sizes) < 2:
        return None
    if not _matches(p, sizes, steps):
        return None
    by_stride = sorted(range(len(sizes)), key=lambda j: -steps[j])
    dims = tuple(sizes[j] for j in by_stride)
    expected = 1
    for j in reversed(by_stride):  # smallest stride first: 1, then each size times the last
        if steps[j] != expected:
            return None
        expected *= sizes[j]
    # the pass walks its digits slowest first: digit j (fastest first) is source axis by_stride.index(j)
    perm = tuple(by_stride.index(j) for j in reversed(range(len(sizes))))
    return AxisOrder(dims, perm)


def _digits(p: np.ndarray) -> tuple[list[int] | None, list[int]]:
    """Sizes and steps of p's digits, fastest first: each the longest run of one step along the
    positions that are multiples of the digits before it (None when a run does not divide n)."""
    n, block = len(p), 1
    sizes: list[int] = []
    steps: list[int] = []
    while block < n:
        along = p[::block]
        step = int(along[1] - along[0])
        if step <= 0:
            return None, steps
        wrong = np.flatnonzero(along != np.arange(len(along)) * step)
        run = int(wrong[0]) if len(wrong) else len(along)
        if run < 2 or len(along) % run:
            return None, steps
        sizes.append(run)
        steps.append(step)
        block *= run
    return sizes, steps


def _matches(p: np.ndarray, sizes: list[int], steps: list[int]) -> bool:
    """Whether p(i) = Σ_j digit_j(i) · step_j for every i (digits fastest first)."""
    offsets = np.zeros(1, dtype=np.int64)
    for size, step in zip(sizes, steps):  # build slowest-first grids from the fastest digit outward
        offsets = (np.arange(size, dtype=np.int64)[:, None] * step + offsets[None, :]).ravel()
    return bool(np.array_equal(offsets, p))
