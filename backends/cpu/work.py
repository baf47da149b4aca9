"""A call's work list: which layout each (batch, head) runs, and the chunks of query rows it runs in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from maskc.calls import CallShape
from maskc.ir import BlockLayout, CompiledPattern

from .cache import PlanCache
from .checks import head_layouts
from .plan import ChunkPlan, tiles_per_chunk

#: (batch, query head, key/value head)
HeadTask = tuple[int, int, int]


@dataclass(frozen=True)
class Job:
    """Everything the forward and backward passes need besides the tensors."""

    #: Each distinct layout with the heads that run it, so a chunk's plan is built once per call.
    groups: tuple[tuple[BlockLayout, tuple[HeadTask, ...]], ...]
    shape: CallShape
    scale: float
    dtype: torch.dtype
    memory_budget: int
    plans: PlanCache

    def chunks(self, layout: BlockLayout) -> Iterator[ChunkPlan]:
        """The layout's chunk plans, sized so that one step holds about `memory_budget` bytes."""
        width = max(self.shape.head_dim, self.shape.value_dim)
        for lo, hi in layout.row_chunks(tiles_per_chunk(layout, width, self.dtype.itemsize, self.memory_budget)):
            yield self.plans.get(layout, lo, hi)


def group_heads(
    patterns: list[CompiledPattern], shape: CallShape
) -> tuple[tuple[BlockLayout, tuple[HeadTask, ...]], ...]:
    """Heads grouped by layout; `patterns` holds one pattern for the whole batch or one per batch element."""
    groups: dict[int, tuple[BlockLayout, list[HeadTask]]] = {}
    for b in range(shape.batch):
        pattern = patterns[b if len(patterns) > 1 else 0]
        index = head_layouts(pattern, shape.heads)
        for h in range(shape.heads):
            layout = pattern.layouts[int(index[h])]
            groups.setdefault(id(layout), (layout, []))[1].append((b, h, h // shape.group))
    return tuple((layout, tuple(tasks)) for layout, tasks in groups.values())
