"""Rectangular calls on the CPU: queries and keys that are slices of the pattern's positions.

The mask of a call is the slice (rows q_start …, columns k_start …) of the full element mask,
read from the IR's element rows of the query tiles it meets, so the rule is evaluated on true
positions. Scores are gathered at the mask's elements (one dot product per element), which is
the plainest exact form: this path serves decoding steps and shards, not whole sequences. Forward
and backward share the same chunk masks; rows with no key give zeros and lse = −inf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from maskc.calls import CallShape
from maskc.ir import BlockLayout, CompiledPattern
from maskc.offsets import Offsets

from .checks import head_layouts


@dataclass(frozen=True)
class MaskChunk:
    """Query rows [row_lo, row_hi) of the call (local indices) against all its key rows."""

    row_lo: int
    row_hi: int
    matrix: sp.csr_array

    @property
    def rows(self) -> np.ndarray:
        """The local query row (within the chunk) of each element."""
        return np.repeat(np.arange(self.row_hi - self.row_lo), np.diff(self.matrix.indptr))


def sliced_mask(layout: BlockLayout, q_start: int, q_len: int, k_start: int, k_len: int) -> sp.csr_array:
    """Rows q_start … q_start + q_len − 1, columns k_start … k_start + k_len − 1 of the element mask."""
    bm = layout.grid.block_m
    tile_lo, tile_hi = q_start // bm, -(-(q_start + q_len) // bm)
    rows = layout.element_rows(tile_lo, tile_hi)
    first = q_start - tile_lo * bm
    part = sp.csr_array(rows[first : first + q_len, k_start : k_start + k_len])
    part.sort_indices()
    return part


@dataclass(frozen=True)
class RectangularJob:
    """A rectangular call's work: per (batch, head) the chunks of its mask, and the scale."""

    shape: CallShape
    scale: float
    dtype: torch.dtype
    #: chunks[(layout index, q_start)], shared by every head and batch element with that pair
    chunks: dict[tuple[int, int], list[MaskChunk]]
    #: (batch, query head, key/value head, key into chunks)
    tasks: tuple[tuple[int, int, int, tuple[int, int]], ...]


def rectangular_job(
    pattern: CompiledPattern, shape: CallShape, offsets: Offsets, scale: float, dtype: torch.dtype, budget: int
) -> RectangularJob:
    """Chunks of query rows small enough that one step's gathered rows hold about `budget` bytes."""
    index = head_layouts(pattern, shape.heads)
    per_row = max(1, offsets.k_len) * (shape.head_dim + shape.value_dim) * dtype.itemsize * 4
    step = max(1, budget // per_row)
    chunks: dict[tuple[int, int], list[MaskChunk]] = {}
    tasks = []
    for b in range(shape.batch):
        q_start = offsets.q_start_of(b)
        for h in range(shape.heads):
            key = (int(index[h]), q_start)
            if key not in chunks:
                layout = pattern.layouts[key[0]]
                chunks[key] = [
                    MaskChunk(lo, min(lo + step, offsets.q_len), sliced_mask(
                        layout, q_start + lo, min(step, offsets.q_len - lo), offsets.k_start, offsets.k_len))
                    for lo in range(0, offsets.q_len, step)
                ]  # fmt: skip
            tasks.append((b, h, h // shape.group, key))
    return RectangularJob(shape=shape, scale=scale, dtype=dtype, chunks=chunks, tasks=tuple(tasks))


def _gathered(left: np.ndarray, right: np.ndarray, chunk: MaskChunk) -> np.ndarray:
    """left[row] · right[column] at every element of the chunk."""
    return np.einsum("ed,ed->e", left[chunk.row_lo + chunk.rows], right[chunk.matrix.indices])


def _row_softmax(chunk: MaskChunk, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities per element, and (rows with a key, their lse)."""
    counts = np.diff(chunk.matrix.indptr)
    rows = np.flatnonzero(counts)
    if len(scores) == 0:
        return scores, rows, scores[:0]
    starts = chunk.matrix.indptr[rows]
    peak = np.maximum.reduceat(scores, starts)
    probs = np.exp(scores - np.repeat(peak, counts[rows]))
    total = np.add.reduceat(probs, starts)
    probs /= np.repeat(total, counts[rows])
    return probs, rows, peak + np.log(total)


def _with(chunk: MaskChunk, values: np.ndarray) -> sp.csr_array:
    m = chunk.matrix
    return sp.csr_array((values, m.indices, m.indptr), shape=m.shape)


def rectangular_forward(job: RectangularJob, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> tuple:
    """Output (B, H, m, Dv) and lse (B, H, m)."""
    shape = job.shape
    out = np.zeros((shape.batch, shape.heads, shape.q_len, shape.value_dim), dtype=q.dtype)
    lse = np.full((shape.batch, shape.heads, shape.q_len), -np.inf, dtype=q.dtype)
    for b, h, g, key in job.tasks:
        for chunk in job.chunks[key]:
            probs, rows, row_lse = _row_softmax(chunk, _gathered(q[b, h], k[b, g], chunk) * job.scale)
            out[b, h, chunk.row_lo : chunk.row_hi] = _with(chunk, probs) @ v[b, g]
            lse[b, h, chunk.row_lo + rows] = row_lse
    return out, lse


def rectangular_backward(job: RectangularJob, q, k, v, lse, out, d_out, d_lse) -> tuple:
    """(dq, dk, dv): dS = P ∘ (dP − rowsum(dO ∘ O) + dlse), as in the square backward pass."""
    row_terms = np.einsum("bhnd,bhnd->bhn", d_out, out) - d_lse
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for b, h, g, key in job.tasks:
        for chunk in job.chunks[key]:
            local = chunk.row_lo + chunk.rows
            probs = np.exp(_gathered(q[b, h], k[b, g], chunk) * job.scale - lse[b, h, local])
            d_scores = _gathered(d_out[b, h], v[b, g], chunk) - row_terms[b, h, local]
            d_scaled = _with(chunk, probs * d_scores * job.scale)
            dq[b, h, chunk.row_lo : chunk.row_hi] = d_scaled @ k[b, g]
            dk[b, g] += d_scaled.T @ q[b, h, chunk.row_lo : chunk.row_hi]
            dv[b, g] += _with(chunk, probs).T @ d_out[b, h, chunk.row_lo : chunk.row_hi]
    return dq, dk, dv
