"""Padded batches: sequences of different lengths in one (B, T) tensor, positions counted per sequence.

A batch marks its tokens with a 2-D mask (1 = token, 0 = padding), as tokenizers and HF
transformers pass it. Each row's tokens must be one contiguous run: left padding (generation),
right padding (training) or both; a hole in the middle of a row is refused. The spec's rule sees
each sequence's own positions: position 0 is the row's first real token, so a window or a sink
means the same thing in every row whatever its padding.

`padded_attention` runs such a batch through `maskc.attention` with what rectangular calls already
offer (one key offset, one query offset per sequence): the keys of every row are gathered into a
common frame (frame slot j holds position k0 + j in every row), the queries are shifted so their
first real row sits at its own position, and the output is moved back, zeros on padding rows.
Frame slots a row lacks (padding after its last token) sit after all its queries, so a causal
pattern never reads them; a pattern that is not causal could, and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from maskc.attention import attention
from maskc.errors import BackendError
from maskc.ir import CompiledPattern
from maskc.kvcache import KVCache
from maskc.retention import pattern_retention


@dataclass(frozen=True)
class PaddedBatch:
    """Row b's tokens are columns first[b] … first[b] + count[b] − 1 of a (B, length) batch.

    `first` and `count` are int64 tensors (B,) on the batch's device; a row without tokens has
    count 0.
    """

    first: torch.Tensor
    count: torch.Tensor
    length: int

    @classmethod
    def from_mask(cls, mask: Any) -> PaddedBatch:
        """The batch a 2-D 0/1 mask describes, checked: values 0 or 1, each row's ones contiguous."""
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise BackendError(f"attention_mask must be a 2-D tensor (batch, tokens) of 0 and 1; got {shape}")
        if mask.dtype != torch.bool:
            bad = (mask != 0) & (mask != 1)
            if bool(bad.any()):
                b, t = bad.nonzero()[0].tolist()
                raise BackendError(
                    f"attention_mask must hold 0 (padding) and 1 (token); batch element {b}, column {t} holds "
                    f"{mask[b, t].item()}"
                )
        real = mask.bool()
        length = real.shape[1]
        count = real.sum(dim=1)
        first = torch.where(count > 0, real.int().argmax(dim=1), 0)
        last = length - 1 - real.flip(1).int().argmax(dim=1)
        holes = (count > 0) & (last - first + 1 != count)
        if bool(holes.any()):
            b = int(holes.nonzero()[0, 0])
            column = int(first[b]) + int((~real[b, int(first[b]) :]).int().argmax())
            raise BackendError(
                f"attention_mask row {b} has padding at column {column} between tokens (columns {int(first[b])}.."
                f"{int(last[b])}); supported: each row's tokens contiguous, padding on the left, the right or both"
            )
        return cls(first=first.long(), count=count.long(), length=length)

    @property
    def padded(self) -> bool:
        """Whether any row has padding."""
        return bool((self.count != self.length).any())

    def real(self, start: int, columns: int) -> torch.Tensor:
        """(B, columns) bool: which of columns start … start + columns − 1 hold tokens."""
        index = start + torch.arange(columns, device=self.first.device)
        return (index[None, :] >= self.first[:, None]) & (index[None, :] < (self.first + self.count)[:, None])


@dataclass(frozen=True)
class KeyFrame:
    """Keys gathered so that slot j of every row holds position `start` + j (`valid`: the row has it)."""

    k: torch.Tensor
    v: torch.Tensor
    valid: torch.Tensor
    start: int
    #: (B,) the first position each row holds, and one past its last.
    low: torch.Tensor
    high: torch.Tensor


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, D) gathered along L by index (B, W) → (B, H, W, D)."""
    batch, heads, _, dim = x.shape
    return torch.gather(x, 2, index[:, None, :, None].expand(batch, heads, index.shape[1], dim))


def key_frame(batch: PaddedBatch, k: torch.Tensor, v: torch.Tensor, k_start: int) -> KeyFrame:
    """The call's keys (columns k_start … k_start + L − 1 of the batch) in a frame common to all rows."""
    length = k.shape[2]
    first, end = batch.first, batch.first + batch.count
    low = (torch.clamp(first, min=k_start) - first).clamp(min=0)
    high = torch.clamp(end, max=k_start + length) - first
    present = high > low
    if not bool(present.any()):
        low, high = low.clamp(max=0), high.clamp(min=0)
        present = torch.ones_like(present)
    start = int(low[present].min())
    width = max(1, int(high[present].max()) - start)
    positions = start + torch.arange(width, device=k.device)
    valid = (positions[None, :] >= low[:, None]) & (positions[None, :] < high[:, None])
    source = (positions[None, :] + first[:, None] - k_start).clamp(0, length - 1)
    keep = valid[:, None, :, None]
    frame_k = torch.where(keep, _take(k, source), 0)
    frame_v = torch.where(keep, _take(v, source), 0)
    return KeyFrame(k=frame_k, v=frame_v, valid=valid, start=start, low=low, high=high)


def store_prompt(cache: KVCache, batch: PaddedBatch, k: torch.Tensor, v: torch.Tensor, k_start: int = 0) -> None:
    """Store a padded prompt's keys (columns k_start …) in an empty cache: each sequence its own
    tokens from position 0, as a cache holds sequences of different lengths."""
    frame = key_frame(batch, k, v, k_start)
    cache.append(frame.k, frame.v, counts=batch.count.cpu().numpy())


def check_keys_present(pattern: CompiledPattern, query_positions: torch.Tensor, low: torch.Tensor) -> None:
    """Refuse a call whose keys start after positions the pattern still reads (e.g. a sink a sliding cache
    dropped): every key the pattern keeps for a query at position t must be at a position ≥ low."""
    missing = low > 0
    if not bool(missing.any()):  # every row holds its keys from position 0
        return
    retention = pattern_retention(pattern)
    for b in missing.nonzero()[:, 0].tolist():
        t, first_held = int(query_positions[b]), int(low[b])
        kept = retention.keys(t)
        if len(kept) and int(kept[0]) < first_held:
            raise BackendError(
                f"the keys of sequence {b} start at position {first_held}, but pattern {pattern.spec.name!r} still "
                f"reads position {int(kept[0])} from the query at position {t}: the cache dropped keys the spec "
                "reads (a sliding-window cache shorter than the spec's reach?); use a cache sized by the spec "
                "(maskc.KVCache, maskc.hf.cache_for)"
            )


def padded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: CompiledPattern,
    batch: PaddedBatch,
    *,
    q_start: int,
    k_start: int = 0,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention (B, H, m, Dv) of q (columns q_start … of the batch) over k, v (columns k_start …).

    Row b's position of column c is c − first[b]; padding rows of the output are zeros. The keys
    must end at or after the last query column (as a decoder's do).
    """
    m = q.shape[2]
    frame = key_frame(batch, k, v, k_start)
    if not pattern.spec.causal and not bool(frame.valid.all()):
        raise BackendError(
            f"pattern {pattern.spec.name!r} is not causal: its queries may read key slots after a sequence's last "
            "token, which a padded batch fills with padding; padded batches need a causal spec (causal: true)"
        )
    position_of_first_row = q_start - batch.first
    shift = (-position_of_first_row).clamp(0, m)
    q_offset = (position_of_first_row + shift).clamp(0, max(pattern.n - m, 0))
    check_keys_present(pattern, q_offset, torch.where(frame.high > frame.low, frame.low, 0))
    rows = torch.arange(m, device=q.device)
    shifted_q = _take(q, (rows[None, :] + shift[:, None]).clamp(max=m - 1))
    offsets: Any = int(q_offset[0]) if bool((q_offset == q_offset[0]).all()) else q_offset
    out = attention(shifted_q, frame.k, frame.v, pattern, backend, scale=scale, q_offset=offsets, k_offset=frame.start)
    out = _take(out, (rows[None, :] - shift[:, None]).clamp(min=0))
    return torch.where(batch.real(q_start, m)[:, None, :, None], out, 0)
