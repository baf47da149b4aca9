"""Chunk plans kept between calls, within a byte budget.

Building a chunk's element CSR costs more than the attention arithmetic on it (bench/bench_cpu.py
measures both), so a training loop, and the backward pass after its forward, reuse the plans of
the patterns they run. Entries go when their layout is garbage collected, and the least
recently used go first when the budget is reached.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

from maskc.ir import BlockLayout

from .plan import ChunkPlan, build_plan


class PlanCache:
    """Chunk plans by (layout, row-tile range), holding at most `budget` bytes (0 keeps none)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._plans: OrderedDict[tuple[int, int, int], ChunkPlan] = OrderedDict()
        self._bytes = 0
        self._watched: set[int] = set()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, layout: BlockLayout, tile_lo: int, tile_hi: int) -> ChunkPlan:
        key = (id(layout), tile_lo, tile_hi)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
            return plan
        plan = build_plan(layout, tile_lo, tile_hi)
        self._keep(layout, key, plan)
        return plan

    def clear(self) -> None:
        self._plans.clear()
        self._bytes = 0

    def _keep(self, layout: BlockLayout, key: tuple[int, int, int], plan: ChunkPlan) -> None:
        size = plan.nbytes()
        if size > self.budget:
            return
        if id(layout) not in self._watched:
            self._watched.add(id(layout))
            weakref.finalize(layout, self._forget, id(layout))
        self._plans[key] = plan
        self._bytes += size
        while self._bytes > self.budget:
            _, old = self._plans.popitem(last=False)
            self._bytes -= old.nbytes()

    def _forget(self, layout_id: int) -> None:
        """Drop the plans of a layout that no longer exists (its id may be reused)."""
        self._watched.discard(layout_id)
        for key in [key for key in self._plans if key[0] == layout_id]:
            self._bytes -= self._plans.pop(key).nbytes()
