"""Context parallelism: one sequence split over the ranks of a torch.distributed group.

`plan` reads the IR and says which keys each rank needs and from whom; `attention` runs a
compiled pattern on this rank's shards, moving only those keys, and merges partial results by
log-sum-exp. `shard` / `unshard` split and reassemble full-sequence tensors.
"""

from maskc.distributed.parallel import attention, simulate
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
