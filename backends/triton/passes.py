"""Running a pattern's schedule: each pass on gathered q, k, v, the outputs merged by log-sum-exp.

Each pass is a square block-sparse problem (`maskc.schedule.positioned.pass_pattern`) that the
kernels run as they run any pattern, their predicate reading the pass's position tables. Rows and
columns are gathered with `index_select` (a copy) and zero-padded to the pass's size; the merge
(`maskc.schedule.merge`) is torch code, so autograd gives each pass's backward its share of the
output gradient and its lse gradient: the gradients are exact, scattered back by the gathers'
own backward.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from maskc.ir import CompiledPattern
from maskc.schedule import Pass, Schedule, schedule_of
from maskc.schedule.merge import merge_passes
from maskc.schedule.positioned import pass_pattern

from .function import sparse_attention

#: The pass patterns of each scheduled pattern, kept alive with it (their plans are found by them).
_PASS_PATTERNS: weakref.WeakKeyDictionary[CompiledPattern, tuple[tuple[CompiledPattern, ...], ...]] = (
    weakref.WeakKeyDictionary()
)


def runs_passes(pattern: CompiledPattern) -> bool:
    """Whether the pattern's schedule has more than its single pass in token order (eager calls only:
    a traced call finds its pattern by spec hash, which pass patterns do not have)."""
    if pattern.schedule_mode == "single" or pattern.dynamic or torch.compiler.is_compiling():
        return False
    return not all(s.single for s in schedule_of(pattern))


def _pass_patterns(pattern: CompiledPattern) -> tuple[tuple[CompiledPattern, ...], ...]:
    if pattern not in _PASS_PATTERNS:
        _PASS_PATTERNS[pattern] = tuple(
            tuple(pass_pattern(pattern, p, f"{k}.{i}") for i, p in enumerate(s.passes))
            for k, s in enumerate(schedule_of(pattern))
        )
    return _PASS_PATTERNS[pattern]


def _gather(x: torch.Tensor, index: torch.Tensor, identity: bool, size: int) -> torch.Tensor:
    """x's rows in the pass's order, zero-padded to the pass's size."""
    rows = x if identity else x.index_select(2, index)
    return rows if rows.shape[2] == size else F.pad(rows, (0, 0, 0, size - rows.shape[2]))


def _run_schedule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    schedule: Schedule,
    patterns: tuple[CompiledPattern, ...],
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    outs, lses, rows = [], [], []
    for p, pattern in zip(schedule.passes, patterns):
        q_index, k_index = (torch.as_tensor(i, device=q.device) for i in (p.q_index, p.k_index))
        size = pattern.n
        out, lse = sparse_attention(
            _gather(q, q_index, p.q_identity, size),
            _gather(k, k_index, p.k_identity, size),
            _gather(v, k_index, p.k_identity, size),
            pattern,
            scale,
        )
        outs.append(out[:, :, : p.nq])
        lses.append(lse[:, :, : p.nq])
        rows.append(q_index)
    return merge_passes(outs, lses, rows, q.shape[2])


def _heads_alike(pattern: CompiledPattern, heads: int) -> list[torch.Tensor | None]:
    """Per layout, the query heads it serves (None: every head, one shared layout)."""
    if len(pattern.layouts) == 1:
        return [None]
    return [torch.as_tensor((pattern.head_layout == k).nonzero()[0]) for k in range(len(pattern.layouts))]


def pass_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: CompiledPattern, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of a static pattern run pass by pass; per-head layouts run head group by head group."""
    schedules, patterns = schedule_of(pattern), _pass_patterns(pattern)
    groups = _heads_alike(pattern, q.shape[1])
    if groups == [None]:
        return _run_schedule(q, k, v, schedules[0], patterns[0], scale)
    group = q.shape[1] // k.shape[1]
    k_full, v_full = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    parts, order = [], []
    for layout, heads in enumerate(groups):
        heads = heads.to(q.device)
        parts.append(
            _run_schedule(
                q.index_select(1, heads),
                k_full.index_select(1, heads),
                v_full.index_select(1, heads),
                schedules[layout],
                patterns[layout],
                scale,
            )
        )
        order.append(heads)
    inverse = torch.argsort(torch.cat(order))
    out = torch.cat([o for o, _ in parts], dim=1).index_select(1, inverse)
    lse = torch.cat([s for _, s in parts], dim=1).index_select(1, inverse)
    return out, lse


def schedule_passes(pattern: CompiledPattern) -> list[Pass]:
    """Every pass the pattern runs (for reports)."""
    return [p for s in schedule_of(pattern) for p in s.passes]
