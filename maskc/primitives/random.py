"""random: each query block (or token) attends `per_row` distinct key blocks (or keys), seeded.

The draw depends only on (seed, n, spec block size), so a spec means the same mask
everywhere. `RandomRule` keeps the drawn table: j // unit ∈ table[i // unit]. Kernels read
the table as a lookup, which is exact and needs no bitmask.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import NonNegativeInt, PositiveInt

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.rules import RandomRule, Rule, draw_distinct


@register
class Random(Primitive):
    """Random attention: `per_row` distinct key blocks per query block (granularity block) or keys per query."""

    kind = "random"
    summary = "each query block attends `per_row` random key blocks (or each token `per_row` keys)"

    per_row: PositiveInt
    seed: NonNegativeInt = 0
    granularity: Literal["block", "token"] = "block"

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        unit = ctx.block_size if self.granularity == "block" else 1
        units = -(-ctx.n // unit)
        if self.per_row > units:
            what = "key blocks" if unit > 1 else "keys"
            raise ctx.fail(
                path.child("per_row"), f"per_row {self.per_row} exceeds the {units} {what} at seq_len {ctx.n}"
            )
        rng = np.random.default_rng([self.seed, ctx.n, ctx.block_size])
        return RandomRule(draw_distinct(units, units, self.per_row, rng), unit, ctx.n, path)
