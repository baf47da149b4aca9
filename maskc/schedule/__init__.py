"""Schedules: how a compiled pattern runs as one or more block-sparse passes.

The mask never changes, only its schedule. A pass is a block-sparse problem in its own token
order (queries and keys permuted, or a gathered subset of them) whose element rule is still
evaluated on original positions; passes hold disjoint sets of pairs whose union is the mask, so
their outputs merge exactly by log-sum-exp.

- `record`: `Pass` and `Schedule`, plain records of arrays;
- `decompose`: the rule tree split into disjuncts, and the lowering each one asks for;
- `passes`: a pass's tile tables in its own coordinates;
- `plan`: the cost model that picks the lowering (`schedule_of`).
"""

from maskc.schedule.plan import (
    SCHEDULE_MODES,
    plan_schedule,
    schedule_lines,
    schedule_of,
    schedule_reasons,
    schedule_summary,
)
from maskc.schedule.record import Pass, Schedule

__all__ = [
    "SCHEDULE_MODES",
    "Pass",
    "Schedule",
    "plan_schedule",
    "schedule_lines",
    "schedule_of",
    "schedule_reasons",
    "schedule_summary",
]
