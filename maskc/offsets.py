"""Rectangular calls: queries and keys that are slices of the positions a pattern is compiled for.

A pattern is compiled for n positions. A call may hold fewer: m query rows at positions
q_offset … q_offset + m − 1 and nk key rows at positions k_offset … k_offset + nk − 1. The element
rule is always evaluated on the true positions, so the call computes exactly the slice (rows
q_offset …, columns k_offset …) of the full mask. Decoding is m = 1 at the last position;
context parallelism runs a query shard against a key shard. q_offset may differ per batch
element (a tensor of shape (B,)), for batches of sequences of different lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from maskc.errors import BackendError


@dataclass(frozen=True)
class Offsets:
    """Where a call's query and key rows sit among the pattern's n positions.

    `q_starts` holds one start per batch element (a host array); `q_tensor` is the same starts as a
    tensor on the inputs' device when the caller gave a tensor (kernels read it there).
    """

    n: int
    q_len: int
    k_len: int
    k_start: int
    q_starts: np.ndarray
    q_tensor: torch.Tensor | None = None

    @property
    def uniform(self) -> bool:
        """True when every batch element's queries start at the same position."""
        return bool((self.q_starts == self.q_starts[0]).all())

    @property
    def q_first(self) -> int:
        """The smallest query position of the call."""
        return int(self.q_starts.min())

    @property
    def q_end(self) -> int:
        """One past the largest query position of the call."""
        return int(self.q_starts.max()) + self.q_len

    @property
    def k_end(self) -> int:
        return self.k_start + self.k_len

    def q_start_of(self, batch: int) -> int:
        return int(self.q_starts[batch if len(self.q_starts) > 1 else 0])


def is_full_call(q_len: int, k_len: int, n: int, q_offset: Any, k_offset: Any) -> bool:
    """True when the call covers all n positions with queries and keys aligned (the square path)."""
    return (q_offset is None or _is_zero(q_offset)) and _is_zero(k_offset) and q_len == k_len == n


def _is_zero(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) == 0


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_floating_point:
            return int(value)
        raise BackendError(f"{what} must be an integer, got {value!r}")
    return int(value)


def resolve_offsets(batch: int, q_len: int, k_len: int, n: int, q_offset: Any = None, k_offset: Any = 0) -> Offsets:
    """The call's positions, checked: 0 ≤ offsets, q_offset + m ≤ n, k_offset + nk ≤ n.

    q_offset defaults to k_offset + nk − m (bottom-right alignment: the last query is the last key).
    """
    k_start = _integer(k_offset, "k_offset")
    if k_start < 0 or k_start + k_len > n:
        raise BackendError(
            f"k_offset {k_start} with {k_len} key rows covers positions {k_start}..{k_start + k_len - 1}; "
            f"expected 0 <= k_offset and k_offset + {k_len} <= {n} (the pattern's seq_len)"
        )
    q_tensor = None
    if q_offset is None:
        start = k_start + k_len - q_len
        if start < 0:
            raise BackendError(
                f"q has {q_len} rows but k only {k_len} (from position {k_start}): aligned bottom-right, the "
                f"queries would start at position {start}; expected at most {k_start + k_len} query rows, "
                "or pass q_offset"
            )
        starts = np.asarray([start], dtype=np.int64)
    elif isinstance(q_offset, torch.Tensor) and q_offset.dim() == 1:
        if q_offset.dtype.is_floating_point or q_offset.dtype == torch.bool:
            raise BackendError(f"q_offset must hold integers, got dtype {q_offset.dtype}")
        if len(q_offset) != batch:
            raise BackendError(f"q_offset has {len(q_offset)} entries; expected one per batch element ({batch})")
        starts = q_offset.detach().to("cpu", torch.int64).numpy()
        q_tensor = q_offset
    else:
        starts = np.asarray([_integer(q_offset, "q_offset (an integer or a tensor of shape (B,))")], dtype=np.int64)
    bad = np.flatnonzero((starts < 0) | (starts + q_len > n))
    if len(bad):
        start = int(starts[bad[0]])
        where = f" (batch element {int(bad[0])})" if len(starts) > 1 else ""
        raise BackendError(
            f"q_offset {start}{where} with {q_len} query rows covers positions {start}..{start + q_len - 1}; "
            f"expected 0 <= q_offset and q_offset + {q_len} <= {n} (the pattern's seq_len)"
        )
    return Offsets(n=n, q_len=q_len, k_len=k_len, k_start=k_start, q_starts=starts, q_tensor=q_tensor)
