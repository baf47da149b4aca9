"""`KVCache`: keys and values of one attention layer for decoding, sized by the spec.

The cache keeps exactly the slots its pattern's retention (maskc.retention) says a future query
may read: pinned positions (sinks, global columns) in fixed slots, and the recent positions of a
window in a rolling buffer, so a causal window of 4096 with 4 sinks holds 4100 slots whatever the
context length. A pattern whose future queries may read any key (dense, a stride, a rule maskc does
not derive) keeps every key in a buffer that grows.

Keys in a rolling buffer are not in position order, so the cache stores each slot's position
(`positions`, −1 for an empty slot) and attention evaluates the spec's rule on those true
positions: the order of the slots never matters to softmax attention. Every batch element keeps
its own length, so a batch may hold sequences of different lengths; appends must continue each
sequence where it stopped (an out-of-order position is an error).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from maskc.errors import BackendError
from maskc.ir import CompiledPattern
from maskc.registry import choose_backend
from maskc.retention import Retention, pattern_retention

#: Slots a growing cache starts with, doubled when full.
GROWTH_START = 256


class KVCache:
    """Keys (B, Hkv, slots, D) and values (B, Hkv, slots, Dv) of one layer, with each slot's position.

    `pattern` is the layer's compiled pattern (its n bounds the positions). `append(k, v)` adds
    the next tokens of every sequence; `attention(q)` attends the queries of each sequence's last
    m ≤ `step_tokens` positions over the cache (a rolling buffer keeps step_tokens − 1 more recent
    keys so that the first of them still finds its window). `lengths` holds each sequence's length.
    """

    def __init__(
        self,
        pattern: CompiledPattern,
        batch: int,
        kv_heads: int,
        head_dim: int,
        value_dim: int | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: Any = "cpu",
        step_tokens: int = 1,
    ) -> None:
        if pattern.dynamic:
            raise BackendError(
                f"pattern {pattern.spec.name!r} has parts decided at run time ({pattern.run_time_parts}); a "
                "decoding cache needs a static pattern"
            )
        self.pattern = pattern
        self.retention: Retention = pattern_retention(pattern)
        self.pinned = np.asarray(sorted(self.retention.pinned), dtype=np.int64)
        if step_tokens < 1:
            raise BackendError(f"step_tokens must be at least 1, got {step_tokens}")
        self.step_tokens = step_tokens
        # queries of one step start step_tokens − 1 positions before the last key: the ring keeps
        # what the first of them reads
        self.recent = self.retention.recent() + step_tokens - 1 if self.retention.recent() else 0
        # a global query row reads every key: the ring must still hold them all when its step comes
        # keys a grid window keeps are not the most recent ones: such a cache grows (keeps every key)
        self.rolling = (
            self.retention.grid is None
            and self.retention.tokens() is not None
            and self.retention.rows_until + step_tokens <= self.recent
        )
        slots = len(self.pinned) + self.recent if self.rolling else GROWTH_START
        self.batch, self.kv_heads = batch, kv_heads
        self.k = torch.zeros(batch, kv_heads, slots, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, kv_heads, slots, value_dim or head_dim, dtype=dtype, device=device)
        self.positions = torch.full((batch, slots), -1, dtype=torch.int32, device=device)
        self.lengths = np.zeros(batch, dtype=np.int64)
        self._pinned_slot = np.full(int(self.pinned.max(initial=-1)) + 1, -1, dtype=np.int64)
        self._pinned_slot[self.pinned] = np.arange(len(self.pinned))

    @property
    def slots(self) -> int:
        """Slots held per sequence (the cache's size in tokens)."""
        return self.k.shape[2]

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (self.k, self.v, self.positions))

    def append(self, k: torch.Tensor, v: torch.Tensor, positions: Any = None, counts: Any = None) -> None:
        """Add up to s new tokens per sequence: k (B, Hkv, s, D), v (B, Hkv, s, Dv).

        Sequence b adds its first counts[b] tokens (all s by default; sequences of different lengths
        pass them right-padded), at positions lengths[b] … ; `positions` (an int or one per
        sequence), when given, must say the same: anything else is out of order.
        """
        s = k.shape[2]
        counts = np.broadcast_to(np.asarray(s if counts is None else counts, dtype=np.int64), (self.batch,))
        self._check_append(k, v, positions, counts)
        starts = self.lengths.copy()
        new_positions = starts[:, None] + np.arange(s)[None, :]
        if not self.rolling and int((starts + counts).max()) > self.slots:
            self._grow(int((starts + counts).max()))
        batch_index, token_index, slots = self._slots_of(new_positions, counts)
        device = self.k.device
        b = torch.as_tensor(batch_index, device=device)
        t = torch.as_tensor(token_index, device=device)
        slot = torch.as_tensor(slots, device=device)
        self.k[b, :, slot] = k[b, :, t].to(self.k.dtype)
        self.v[b, :, slot] = v[b, :, t].to(self.v.dtype)
        self.positions[b, slot] = torch.as_tensor(new_positions[batch_index, token_index], device=device).int()
        self.lengths = starts + counts

    def _check_append(self, k: torch.Tensor, v: torch.Tensor, positions: Any, counts: np.ndarray) -> None:
        expected = (self.batch, self.kv_heads)
        for name, x in (("k", k), ("v", v)):
            if x.dim() != 4 or tuple(x.shape[:2]) != expected:
                raise BackendError(
                    f"{name} must be (batch {self.batch}, kv heads {self.kv_heads}, tokens, dim); got {tuple(x.shape)}"
                )
        if k.shape[2] != v.shape[2]:
            raise BackendError(f"k and v must add the same number of tokens; got {k.shape[2]} and {v.shape[2]}")
        if (counts < 0).any() or (counts > k.shape[2]).any():
            raise BackendError(f"counts must lie in 0..{k.shape[2]} (the tokens given); got {counts.tolist()}")
        end = int((self.lengths + counts).max())
        if end > self.pattern.n:
            raise BackendError(
                f"the cache's pattern {self.pattern.spec.name!r} is compiled for {self.pattern.n} positions; this "
                f"append would reach position {end - 1}"
            )
        if positions is None:
            return
        values = positions.tolist() if torch.is_tensor(positions) else positions
        given = np.broadcast_to(np.asarray(values), (self.batch,))
        wrong = np.flatnonzero(given != self.lengths)
        if len(wrong):
            b = int(wrong[0])
            raise BackendError(
                f"out-of-order cache append: sequence {b} holds positions 0..{self.lengths[b] - 1}, so its next "
                f"token is position {self.lengths[b]}; got position {int(given[b])}"
            )

    def _slots_of(self, new_positions: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(batch element, token, slot) of every new token that is stored.

        Pinned positions take their fixed slot; in a rolling buffer the others take slot
        pinned + position mod recent, and of one append only the last `recent` of them are
        written (earlier ones would be overwritten in the same write).
        """
        batch_index, token_index = np.nonzero(np.arange(new_positions.shape[1])[None, :] < counts[:, None])
        pos = new_positions[batch_index, token_index]
        if not self.rolling:
            return batch_index, token_index, pos
        pinned_slot = np.full(pos.shape, -1, dtype=np.int64)
        inside = pos < len(self._pinned_slot)
        pinned_slot[inside] = self._pinned_slot[pos[inside]]
        last = (self.lengths + counts - 1)[batch_index]
        ring = pinned_slot < 0
        keep = ~ring | ((last - pos < self.recent) & (self.recent > 0))
        slots = np.where(ring, len(self.pinned) + pos % max(self.recent, 1), pinned_slot)
        return batch_index[keep], token_index[keep], slots[keep]

    def _grow(self, needed: int) -> None:
        size = self.slots
        while size < needed:
            size *= 2
        extra = size - self.slots
        self.k = torch.cat([self.k, self.k.new_zeros(*self.k.shape[:2], extra, self.k.shape[3])], dim=2)
        self.v = torch.cat([self.v, self.v.new_zeros(*self.v.shape[:2], extra, self.v.shape[3])], dim=2)
        self.positions = torch.cat([self.positions, self.positions.new_full((self.batch, extra), -1)], dim=1)

    def attention(
        self, q: torch.Tensor, *, scale: float | None = None, backend: str = "auto", return_lse: bool = False
    ) -> Any:
        """Attention of q (B, H, m, D), the queries of each sequence's last m positions, over the cache.

        Equals `maskc.attention` of the same queries against every key of the sequence.
        """
        if q.dim() != 4 or q.shape[0] != self.batch:
            raise BackendError(f"q must be (batch {self.batch}, heads, rows, dim); got {tuple(q.shape)}")
        m = q.shape[2]
        if m > self.step_tokens:
            raise BackendError(
                f"q has {m} rows; this cache serves steps of at most step_tokens={self.step_tokens} queries "
                "(create it with a larger step_tokens)"
            )
        short = np.flatnonzero(self.lengths < m)
        if len(short):
            raise BackendError(
                f"q has {m} rows but sequence {int(short[0])} holds only {int(self.lengths[short[0]])} positions; "
                "append the tokens' keys and values first"
            )
        q_positions = torch.as_tensor(self.lengths - m, dtype=torch.int32, device=q.device)
        chosen = choose_backend(q, self.k, self.v, self.pattern, backend)
        decode = getattr(chosen, "decode", None)
        if decode is None:
            raise BackendError(f"backend {chosen.name!r} has no decoding path (a `decode` method)")
        counts = None if self.rolling else torch.as_tensor(self.lengths, dtype=torch.int32, device=q.device)
        out, lse = decode(q, self.k, self.v, self.positions, q_positions, self.pattern, scale=scale, slot_counts=counts)
        return (out, lse) if return_lse else out
