"""A pass's token order as a reordering of axes, when it is one: gathered by a view and one copy.

Passes in orders of axes (`maskc.schedule.axes`: a residue order, a tiled order of a grid) are read
in place by the kernels where they can (`passes.py`); the others gather. Gathering rows by such an
order with an index (`index_select`) runs torch's generic gather, and its backward a scatter-add
(`index_add_`): measured on an H200 for the strided pattern's residue pass at n = 32768 (bf16, H =
16, D = 128), 0.86 ms for the three forward gathers and 1.9 ms for their backward, more than the
pass's kernels (bench/NOTES.md). As a view of q (B, H, n, D) split into those axes, permuted, then
flattened, the same gather is one strided copy, and its gradient another: with the axes' sizes in
decreasing stride order, element e of that array is the row Σ e_j · c_j, the axes axes.py's lemma
finds; the permutation puts them in the pass's digit order (slowest first), and flattening walks
them with the last fastest, which is the mixed-radix reading of the pass position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maskc.schedule.axes import Digits, axis_digits


@dataclass(frozen=True)
class AxisOrder:
    """Positions read as an array of `dims` (slowest first, contiguous), its axes walked in `perm`;
    `digits` are axes.py's (m_j, c_j), fastest first."""

    dims: tuple[int, ...]
    perm: tuple[int, ...]
    digits: Digits = ()

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, n, D) with its rows in this order: one strided copy (a view where x's strides allow)."""
        k = len(self.dims)
        view = x.unflatten(2, self.dims).permute(0, 1, *(2 + a for a in self.perm), 2 + k)
        return view.flatten(2, 1 + k)


def axis_order(p: np.ndarray) -> AxisOrder | None:
    """The axis reordering that `p` (pass position → original position) is, or None (the identity, a
    gathered subset, text tokens after a grid: those keep the index gather)."""
    digits = axis_digits(p)
    if digits is None:
        return None
    steps = [step for _, step in digits]
    by_stride = sorted(range(len(digits)), key=lambda j: -steps[j])
    dims = tuple(digits[j][0] for j in by_stride)
    # the pass walks its digits slowest first: digit j (fastest first) is source axis by_stride.index(j)
    perm = tuple(by_stride.index(j) for j in reversed(range(len(digits))))
    return AxisOrder(dims, perm, digits)
