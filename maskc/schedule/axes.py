"""Pass orders that are reorderings of axes, and the row maps with which kernels read them in place.

The orders the lowering passes use most are axis reorderings of the positions 0 … n − 1: a residue
order (positions grouped by i mod s, n = r·s) reads the positions as an (r, s) array and walks it
column by column; a tiled order of a row-major grid reads them as (H/th, th, W/tw, tw) and walks
(H/th, W/tw, th, tw).

Lemma. Let p be a sequence of n integers with p[0] = 0. Read the pass position i in a mixed radix
of sizes m_1 (fastest), m_2, …, m_k with m_1 ⋯ m_k = n, digits d_1(i), …, d_k(i). If
p(i) = Σ_j d_j(i) · c_j for all i, and the strides c_j, ordered decreasingly, are those of a
contiguous array (the smallest is 1, each next one is the previous times its size), then p is the
order of the axes of that array: a permutation of 0 … n − 1.

Proof sketch. The strides decide the source array: with sizes in decreasing stride order, its
element at multi-index e has offset Σ e_j · c_j, which is p's formula with e = the digits; the
digits run over every multi-index once, so p is a permutation. ∎

`axis_digits` finds the digits greedily, each the longest run of a constant step along the
positions one digit slower, and then checks p against the formula in full (numpy, once per
pattern), so digits it returns are exact. With them a kernel reads pass position p at row
Σ_j d_j(p) · c_j, d_j(p) = (p // (m_1 ⋯ m_{j−1})) mod m_j, of q, k, v (and writes its output and
gradients there): `row_map` gives the kernels those (divisor, size, step) triples, and such a pass
costs no copy (the cost model charges it none, `plan.py`).
"""

from __future__ import annotations

import numpy as np

#: Digits a kernel's row map holds (the Triton kernels' `mapped_rows` reads this many triples): a
#: residue order has 2, a tiled order of a 2-D grid 4, of a 3-D grid 6.
KERNEL_DIGITS = 6

#: (m_j, c_j) of each digit, fastest first.
Digits = tuple[tuple[int, int], ...]


def axis_digits(p: np.ndarray) -> Digits | None:
    """The lemma's digits of `p` (pass position → original position), or None when p is not an axis
    reordering with at least two digits (the identity, a gathered subset, text tokens after a grid)."""
    p = np.asarray(p, dtype=np.int64)
    n = len(p)
    if n < 2 or p[0] != 0:
        return None
    sizes, steps = _digits(p)
    if sizes is None or len(sizes) < 2 or not _matches(p, sizes, steps):
        return None
    expected = 1
    for j in sorted(range(len(sizes)), key=lambda j: steps[j]):  # smallest stride first: 1, then size × last
        if steps[j] != expected:
            return None
        expected *= sizes[j]
    return tuple(zip(sizes, steps))


def row_map(digits: Digits | None) -> tuple[int, ...] | None:
    """The kernels' row map: KERNEL_DIGITS (divisor, size, step) triples, fastest digit first, unused
    ones (0, 0, 0); all zeros for token order (None). None when there are more digits than a kernel
    reads (the pass then keeps its copy)."""
    if digits is None:
        return (0,) * (3 * KERNEL_DIGITS)
    if len(digits) > KERNEL_DIGITS:
        return None
    triples, divisor = [], 1
    for size, step in digits:
        triples += [divisor, size, step]
        divisor *= size
    return tuple(triples) + (0,) * (3 * (KERNEL_DIGITS - len(digits)))


def mapped_rows(rows_map: tuple[int, ...], positions: np.ndarray) -> np.ndarray:
    """What a kernel computes from a row map (numpy, for tests): the row each position reads."""
    if rows_map[0] == 0:
        return np.asarray(positions)
    found = np.zeros_like(positions)
    for j in range(KERNEL_DIGITS):
        divisor, size, step = rows_map[3 * j : 3 * j + 3]
        if size:
            found = found + (positions // divisor) % size * step
    return found


def side_map(index: np.ndarray, identity: bool, n: int) -> tuple[int, ...] | None:
    """The row map of one side of a pass over n positions (token order, or an order of axes a kernel
    reads), or None where that side needs a copy (fewer or more rows than n, other orders)."""
    if len(index) != n:
        return None
    if identity or np.array_equal(index, np.arange(n)):
        return row_map(None)
    digits = axis_digits(index)
    return row_map(digits) if digits is not None else None


def in_place_maps(
    q_index: np.ndarray, q_identity: bool, k_index: np.ndarray, k_identity: bool, n: int
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(query, key) row maps with which kernels read a pass in place, or None: both sides over all n
    positions, each in token order or an order of axes of at most KERNEL_DIGITS digits, one not in
    token order."""
    q_map, k_map = side_map(q_index, q_identity, n), side_map(k_index, k_identity, n)
    identity = row_map(None)
    if q_map is None or k_map is None or q_map == k_map == identity:
        return None
    return q_map, k_map


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
