"""random: each query block (or token) attends `per_row` distinct key blocks (or keys), seeded.

The draw depends only on (seed, n, spec block size), so a spec means the same mask
everywhere. `RandomRule` keeps the drawn table: j // unit ∈ table[i // unit]. Kernels read
the table as a lookup, which is exact and needs no bitmask.

With `exclude: [window, global]` (BigBird's draw), a query block draws among the key blocks that
the named entries of the same union do not already cover, so it gains exactly `per_row` new
blocks whenever that many are left (`draw_among`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, NonNegativeInt, field_validator

from maskc import limits
from maskc.grid import TileGrid
from maskc.origin import Origin
from maskc.primitives.base import LowerContext, PatternNode, Primitive, register
from maskc.primitives.sizes import PositiveSize, size_at
from maskc.rules import RandomRule, Rule, UnionRule, draw_distinct
from maskc.rules.random import draw_among


def _check_draw(ctx: LowerContext, path: Origin, rows: int, per_row: int) -> None:
    """Refuse a draw whose table or work is past its limit, before drawing."""
    where = f"at seq_len {ctx.n}, {rows:,} rows of {per_row:,} draws"
    table, work = rows * per_row, rows * per_row * (per_row + 1) // 2
    if table > limits.MAX_RANDOM_ENTRIES:
        over = f"a table of {table:,} entries, over the limit of {limits.MAX_RANDOM_ENTRIES:,}"
        raise ctx.fail(path.child("per_row"), f"{where}: {over} (maskc.limits.MAX_RANDOM_ENTRIES)")
    if work > limits.MAX_RANDOM_WORK:
        over = f"{work:,} comparisons to draw, over the limit of {limits.MAX_RANDOM_WORK:,}"
        raise ctx.fail(path.child("per_row"), f"{where}: {over} (maskc.limits.MAX_RANDOM_WORK); lower per_row")


@register
class Random(Primitive):
    """Random attention: `per_row` distinct key blocks per query block (granularity block) or keys per query."""

    kind = "random"
    summary = "each query block attends `per_row` random key blocks (or each token `per_row` keys)"

    per_row: PositiveSize
    seed: NonNegativeInt = 0
    granularity: Literal["block", "token"] = "block"
    #: Kinds of entries of the same union whose covered key blocks (or keys) the draw skips.
    exclude: list[str] = Field(default_factory=list)

    @field_validator("exclude")
    @classmethod
    def _named_once(cls, kinds: list[str]) -> list[str]:
        for kind in kinds:
            if kind in ("random", "cluster"):
                raise ValueError(f"exclude names entries fixed before the draw; {kind!r} is not one")
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"exclude names a kind twice: {kinds}")
        return kinds

    def _units(self, ctx: LowerContext, path: Origin) -> tuple[int, int, int]:
        """(unit, units, per_row) at ctx.n."""
        unit = ctx.block_size if self.granularity == "block" else 1
        units = -(-ctx.n // unit)
        per_row = size_at(self.per_row, ctx.n, path.child("per_row"), 1)
        if per_row > units:
            what = "key blocks" if unit > 1 else "keys"
            raise ctx.fail(path.child("per_row"), f"per_row {per_row} exceeds the {units} {what} at seq_len {ctx.n}")
        _check_draw(ctx, path, units, per_row)
        return unit, units, per_row

    def _rng(self, ctx: LowerContext) -> np.random.Generator:
        return np.random.default_rng([self.seed, ctx.n, ctx.block_size])

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        if self.exclude:
            raise ctx.fail(
                path.child("exclude"),
                "exclude skips what other entries of the same union cover; put this random in a list "
                "(a union) beside the entries it names",
            )
        unit, units, per_row = self._units(ctx, path)
        return RandomRule(draw_distinct(units, units, per_row, self._rng(ctx)), unit, ctx.n, path)

    def lower_among(self, ctx: LowerContext, path: Origin, siblings: list[tuple[PatternNode, Rule]]) -> Rule:
        """The rule when drawn among the blocks that the named siblings (node, rule) leave uncovered."""
        named = [rule for node, rule in siblings if node.kind in self.exclude]
        missing = [kind for kind in self.exclude if all(node.kind != kind for node, _ in siblings)]
        if missing:
            raise ctx.fail(
                path.child("exclude"),
                f"exclude names {missing[0]!r}, but no {missing[0]} entry stands beside this random",
            )
        unit, units, per_row = self._units(ctx, path)
        cover = named[0] if len(named) == 1 else UnionRule(named, origin=path.child("exclude"))
        r, c, full = cover.tiles(TileGrid(ctx.n, unit, unit))
        ptr = np.searchsorted(r[full], np.arange(units + 1))
        table = draw_among(per_row, ptr, c[full].astype(np.int64), units, self._rng(ctx))
        return RandomRule(table, unit, ctx.n, path)
