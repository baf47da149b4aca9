"""Top-k block selection: for every query block, the `count` best key blocks by score.

Each row of scores (one query block against every key block) is ranked by score, higher first,
ties to the lower key block, NaN as −inf; when `causal`, only key blocks J ≤ I are candidates.
A row's selection is the first `count` candidates in that order (every candidate when there are
fewer), as maskc.selection's stable sort defines it.

Each score and its J pack into one int64 key that orders as the ranking does: the score's float32
bits made monotone as a signed integer (NaN as −inf, −0 as +0) above, PADDED − 1 − J below, so
keys are distinct and a larger key ranks first. A row's selection is then its candidates whose key
is at least the `count`-th largest candidate key. One program holds ROWS rows in registers and
finds that threshold in `count` steps, each one maximum over the keys below the last threshold:
no sort, no ranks written. Then one pass writes the selection as int8.

`backends/triton/selection.py` launches it.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def maskc_select_top(
    Scores, Selected,
    blocks, count,
    CAUSAL: tl.constexpr, PADDED: tl.constexpr, ROWS: tl.constexpr,
):
    # Stage 1: the program's rows of one (batch, head) group, and their candidates.
    g = tl.program_id(0).to(tl.int64)
    offs_i = tl.program_id(1) * ROWS + tl.arange(0, ROWS)
    offs_j = tl.arange(0, PADDED)
    inside = (offs_i < blocks)[:, None] & (offs_j < blocks)[None, :]
    candidate = inside
    if CAUSAL:
        candidate = candidate & (offs_j[None, :] <= offs_i[:, None])
    at = g * blocks * blocks + offs_i[:, None].to(tl.int64) * blocks + offs_j[None, :]
    score = tl.load(Scores + at, mask=inside, other=0.0)
    # Stage 2: one int64 key per candidate, ordered as the ranking (the lowest key for the others).
    score = tl.where(score != score, float("-inf"), tl.where(score == 0.0, 0.0, score))
    bits = score.to(tl.int32, bitcast=True)
    monotone = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    key = (monotone.to(tl.int64) << 32) | (PADDED - 1 - offs_j)[None, :].to(tl.int64)
    lowest = tl.full([ROWS, PADDED], -9223372036854775808, tl.int64)
    key = tl.where(candidate, key, lowest)
    # Stage 3: `count` steps, each to the largest key below the last threshold.
    last = tl.full([ROWS], 9223372036854775807, tl.int64)
    for _ in range(count):
        last = tl.max(tl.where(key < last[:, None], key, lowest), axis=1)
    # Stage 4: the candidates at or above the threshold are selected (all of them when the steps
    # ran out of candidates: the threshold is then the lowest key).
    tl.store(Selected + at, (candidate & (key >= last[:, None])).to(tl.int8), mask=inside)
