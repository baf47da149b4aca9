"""Context parallelism: one sequence split over the ranks of a torch.distributed group.

`plan` reads the IR and says which keys each rank needs and from whom; `attention` runs a
compiled pattern on this rank's shards, moving only those keys, and merges partial results by
log-sum-exp. `shard` / `unshard` split and reassemble full-sequence tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maskc.distributed.planner import Block, CallSize, Plan, RankPlan, Shipment, Transfer, plan
from maskc.distributed.sharding import SHARDINGS, positions, rank_ranges, shard, unshard

__all__ = [
    "SHARDINGS",
    "Block",
    "CallSize",
    "Plan",
    "RankPlan",
    "Shipment",
    "Transfer",
    "attention",
    "plan",
    "positions",
    "rank_ranges",
    "shard",
    "simulate",
    "unshard",
]

if TYPE_CHECKING:
    from maskc.distributed.parallel import attention, simulate


def __getattr__(name: str) -> Any:
    """`attention` and `simulate` load torch.distributed on first use, so that planning (`maskc plan`) does not."""
    if name in ("attention", "simulate"):
        from maskc.distributed import parallel

        return getattr(parallel, name)
    raise AttributeError(f"module 'maskc.distributed' has no attribute {name!r}")
