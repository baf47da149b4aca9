"""Running a pattern's schedule: each pass on q, k, v in its order, the outputs merged by log-sum-exp.

Each pass is a square block-sparse problem (`maskc.schedule.positioned.pass_pattern`) that the
kernels run as they run any pattern, their predicate reading the pass's position tables. A pass
whose orders are reorderings of axes (a residue order, a tiled order of a grid) over all n
positions is read in place: its plan's row maps (`Plan.read_in_place`, maskc.schedule.axes `row_map`) make
the kernels load and store the rows its positions map to, so q, k, v go in untouched and its
output, lse and gradients come out in token order. Other passes gather rows (a strided copy for an
order of axes, `index_select` otherwise; none for a side already in token order) and are
zero-padded to the pass's size where it is larger. MASKC_TRITON_READ_IN_PLACE=0 (read when a
pattern's passes are first run) makes every pass gather, for comparisons. The merge is one kernel
(`merge.py`), whose backward gives each pass's backward its share of the output gradient and its
lse gradient: the gradients are exact, scattered back by the gathers' own backward where there
are gathers. Every index tensor a call needs is made once per pattern and device
(`ScheduleTables`), so a call copies nothing from the host.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from maskc.ir import CompiledPattern
from maskc.schedule import Pass, Schedule, schedule_of
from maskc.schedule.axes import in_place_maps
from maskc.schedule.positioned import pass_pattern

from .eager import EagerAttention, eager_forward
from .function import PreparedCall
from .gathers import AxisOrder, axis_order
from .merge import MergeTables, fused_merge
from .plan import Plan
from .plans import plan_for
from .turns import PassesInTurn, forward_in_turn, in_turn_enabled

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


def _pass_keys(pattern: CompiledPattern) -> tuple[tuple[str, ...], ...]:
    """The plan keys of each layout's pass patterns (the pass patterns live in _PASS_PATTERNS)."""
    return tuple(tuple(plan_for(p).key for p in passes) for passes in _pass_patterns(pattern))


def _pass_patterns(pattern: CompiledPattern) -> tuple[tuple[CompiledPattern, ...], ...]:
    if pattern not in _PASS_PATTERNS:
        found = []
        for k, s in enumerate(schedule_of(pattern)):
            patterns = tuple(pass_pattern(pattern, p, f"{k}.{i}") for i, p in enumerate(s.passes))
            for p, made in zip(s.passes, patterns):
                rows = in_place_rows(p, pattern.n, made.n)
                if rows is not None:
                    plan_for(made).read_in_place(*rows)
            found.append(patterns)
        _PASS_PATTERNS[pattern] = tuple(found)
    return _PASS_PATTERNS[pattern]


def read_in_place_enabled() -> bool:
    """Whether passes in orders of axes are read in place (MASKC_TRITON_READ_IN_PLACE, default 1)."""
    return os.environ.get("MASKC_TRITON_READ_IN_PLACE", "1") != "0"


def in_place_rows(p: Pass, n: int, size: int) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The (query, key) row maps with which the kernels read pass `p` in place (`axes.in_place_maps`),
    or None where it gathers (also when its pattern is padded past n, or the variable says so)."""
    if not read_in_place_enabled() or size != n:
        return None
    return in_place_maps(p.q_index, p.q_identity, p.k_index, p.k_identity, n)


@dataclass(frozen=True)
class PassIndex:
    """One pass's gathers on a device: the original rows of its queries and keys (None: the side is
    every position in token order, or the kernels read it in place: no gather), its padded size, and
    each side's order as a reordering of axes where it is one (`gathers.py`: a strided copy instead
    of an index gather)."""

    q: torch.Tensor | None
    k: torch.Tensor | None
    size: int
    q_axes: AxisOrder | None = None
    k_axes: AxisOrder | None = None

    @classmethod
    def build(cls, p: Pass, n: int, size: int, device: torch.device, in_place: bool) -> PassIndex:
        if in_place:
            return cls(None, None, size)
        q, k = _index(p.q_index, p.q_identity, n, device), _index(p.k_index, p.k_identity, n, device)
        q_axes = axis_order(p.q_index) if q is not None and len(p.q_index) == n else None
        k_axes = axis_order(p.k_index) if k is not None and len(p.k_index) == n else None
        return cls(q, k, size, q_axes, k_axes)


def _index(index: np.ndarray, identity: bool, n: int, device: torch.device) -> torch.Tensor | None:
    """The index tensor of a gather, or None where the side is all n positions in order."""
    if identity or (len(index) == n and np.array_equal(index, np.arange(n))):
        return None
    return torch.as_tensor(index, device=device)


@dataclass(frozen=True)
class ScheduleTables:
    """Everything a schedule's call needs on a device besides q, k and v: made once per pattern."""

    passes: tuple[PassIndex, ...]
    merge: MergeTables
    #: The passes' plans when every pass reads all n rows of q, k, v as they are (token order or in
    #: place), so that they can run in turn (`turns.py`); None otherwise.
    as_they_are: tuple[Plan, ...] | None = None

    @classmethod
    def build(
        cls, schedule: Schedule, patterns: tuple[CompiledPattern, ...], n: int, device: torch.device
    ) -> ScheduleTables:
        in_place = [plan_for(pattern).mapped for pattern in patterns]
        passes = tuple(
            PassIndex.build(p, n, pattern.n, device, mapped)
            for p, pattern, mapped in zip(schedule.passes, patterns, in_place)
        )
        # a pass read in place writes its rows in token order
        rows = [np.arange(n) if mapped else p.q_index for p, mapped in zip(schedule.passes, in_place)]
        merge = MergeTables.build(rows, [pattern.n for pattern in patterns], n, device)
        plain = len(passes) > 1 and all(p.q is None and p.k is None and p.size == n for p in passes)
        return cls(passes, merge, tuple(plan_for(pattern) for pattern in patterns) if plain else None)


@dataclass(frozen=True)
class DeviceTables:
    """A pattern's tables on one device: one ScheduleTables per layout; with several layouts, the
    query heads each serves and the order that puts their outputs back."""

    schedules: tuple[ScheduleTables, ...]
    heads: tuple[torch.Tensor, ...] | None
    head_order: torch.Tensor | None


#: Per scheduled pattern and device: each layout's ScheduleTables, and the head tables of per-head layouts.
_TABLES: weakref.WeakKeyDictionary[CompiledPattern, dict[torch.device, DeviceTables]] = weakref.WeakKeyDictionary()


def _device_tables(pattern: CompiledPattern, device: torch.device) -> DeviceTables:
    tables = _TABLES.setdefault(pattern, {})
    if device not in tables:
        schedules = tuple(
            ScheduleTables.build(s, patterns, pattern.n, device)
            for s, patterns in zip(schedule_of(pattern), _pass_patterns(pattern))
        )
        heads = order = None
        if len(pattern.layouts) > 1:
            groups = [np.flatnonzero(pattern.head_layout == k) for k in range(len(pattern.layouts))]
            heads = tuple(torch.as_tensor(g, device=device) for g in groups)
            order = torch.as_tensor(np.argsort(np.concatenate(groups), kind="stable"), device=device)
        tables[device] = DeviceTables(schedules, heads, order)
    return tables[device]


def _gather(x: torch.Tensor, index: torch.Tensor | None, size: int, axes: AxisOrder | None) -> torch.Tensor:
    """x's rows in the pass's order, zero-padded to the pass's size (neither where not needed)."""
    if index is not None:
        x = axes.gather(x) if axes is not None else x.index_select(2, index)
    return x if x.shape[2] == size else F.pad(x, (0, 0, 0, size - x.shape[2]))


def _run_schedule(
    call: PreparedCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: ScheduleTables, keys: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of q, k, v (prepared by `call`) through the schedule's passes, run by their plans' keys:
    in turn where every pass reads q, k, v as they are (`turns.py`), else each on its gathers, merged."""
    plans = tables.as_they_are
    if plans is not None and _runs_in_turn(call):
        if call.operator is eager_forward:
            return forward_in_turn(plans, q, k, v, call.scale)
        return PassesInTurn.apply(q, k, v, plans, call.scale)
    outs, lses = [], []
    for index, key in zip(tables.passes, keys):
        out, lse = call.operator(
            _gather(q, index.q, index.size, index.q_axes),
            _gather(k, index.k, index.size, index.k_axes),
            _gather(v, index.k, index.size, index.k_axes),
            key, call.scale, None, 0, index.size, 0, [],
        )  # fmt: skip
        outs.append(out)
        lses.append(lse)
    only = tables.passes[0]
    if len(outs) == 1 and only.q is None and only.size == q.shape[2]:
        return outs[0], lses[0]  # one pass over every row in token order: nothing to merge
    return fused_merge(outs, lses, tables.merge)


def _runs_in_turn(call: PreparedCall) -> bool:
    """Whether passes that read q, k, v as they are run in turn in this call: an eager one (the custom
    op that a traced call takes runs one pass at a time), unless MASKC_TRITON_PASSES_IN_TURN=0."""
    return in_turn_enabled() and (call.operator is eager_forward or call.operator == EagerAttention.apply)


def pass_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: CompiledPattern, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, lse) of a static pattern run pass by pass; per-head layouts run head group by head group.
    The call is prepared once (`PreparedCall`), and each pass's operator runs on gathers of it."""
    keys, tables = _pass_keys(pattern), _device_tables(pattern, q.device)
    call = PreparedCall.of(q, k, v, scale)
    if tables.heads is None:
        out, lse = _run_schedule(call, call.q, call.k, call.v, tables.schedules[0], keys[0])
        return call.output(out), lse
    group = q.shape[1] // k.shape[1]
    k_full, v_full = call.k.repeat_interleave(group, dim=1), call.v.repeat_interleave(group, dim=1)
    parts = [
        _run_schedule(
            call, call.q.index_select(1, heads), k_full.index_select(1, heads), v_full.index_select(1, heads), s, p
        )
        for heads, s, p in zip(tables.heads, tables.schedules, keys)
    ]
    out = torch.cat([o for o, _ in parts], dim=1).index_select(1, tables.head_order)
    lse = torch.cat([s for _, s in parts], dim=1).index_select(1, tables.head_order)
    return call.output(out), lse


def schedule_passes(pattern: CompiledPattern) -> list[Pass]:
    """Every pass the pattern runs (for reports)."""
    return [p for s in schedule_of(pattern) for p in s.passes]
