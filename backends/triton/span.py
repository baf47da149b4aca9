"""The positions a kernel launch covers: all n (full-length calls) or a rectangle of them.

Kernels address query and key rows by position. A rectangular call (maskc.offsets) has its m
query rows at q_start … (per batch element when `q_starts` is a tensor) and its nk key rows at
k_start …; kernels load and store only positions inside, and walk only the tiles of the
rectangle that covers every batch element's rows (`tile_window`). A full-length call passes
starts 0 and ends n and keeps its unrestricted tables; a call on whole tiles (full-length, or a
rectangle on tile borders) takes the EVEN_N fast path, with no bounds checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from maskc.tracing import made_once


@dataclass(frozen=True)
class Span:
    """Query rows q_first … q_end − 1 (union over the batch) and key rows k_start … k_end − 1 of n."""

    n: int
    q_len: int
    q_first: int
    q_end: int
    k_start: int
    k_end: int
    #: One query start per batch element (int32, on the inputs' device), or None when all share q_first.
    q_starts: torch.Tensor | None = None

    @classmethod
    def full(cls, n: int) -> Span:
        """All n positions (one object per n: a full-length call builds none)."""
        return _full_span(n)

    @property
    def is_full(self) -> bool:
        return self.q_starts is None and self.q_first == 0 and self.k_start == 0 and self.q_end == self.k_end == self.n

    def even(self, block_m: int, block_n: int) -> bool:
        """Whether kernels may skip every bounds check: every tile they walk lies inside the call's rows,
        as when the query and key ranges (and n) start and end on tile borders (full-length calls on
        whole tiles, or a context-parallel shard's rectangle)."""
        if self.q_starts is not None or self.q_end - self.q_first != self.q_len:
            return False
        rows = (self.q_first, self.q_end, self.n)
        keys = (self.k_start, self.k_end, self.n)
        return all(p % block_m == 0 for p in rows) and all(p % block_n == 0 for p in keys)

    def tile_window(self, block_m: int, block_n: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """(query tiles [lo, hi), key tiles [lo, hi)) a rectangular call meets; None for the whole grid."""
        if self.is_full:
            return None
        rows = (self.q_first // block_m, -(-self.q_end // block_m))
        cols = (self.k_start // block_n, -(-self.k_end // block_n))
        return rows, cols

    def kernel_args(self, device: torch.device) -> tuple:
        """(q_starts, q_start, q_len, k_lo, k_hi) as the kernels take them (q_starts a dummy when unused)."""
        starts = self.q_starts if self.q_starts is not None else _dummy(device)
        return starts, self.q_first, self.q_len, self.k_start, self.k_end


@lru_cache(maxsize=64)
def _full_span(n: int) -> Span:
    return Span(n=n, q_len=n, q_first=0, q_end=n, k_start=0, k_end=n)


_DUMMIES: dict[str, torch.Tensor] = {}


def _dummy(device: torch.device) -> torch.Tensor:
    return made_once(_DUMMIES, str(device), lambda: torch.zeros(1, dtype=torch.int32, device=device))
