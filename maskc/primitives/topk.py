"""topk: each query block attends the k key blocks that score highest against it, chosen at run time.

For query block I and key block J (positions grouped by the spec's block_size B), score(I, J) is
the mean query of I dotted with the mean key of J, in float32, per batch and head; each query
block keeps the `blocks` best key blocks among its candidates (every key block, or J ≤ I when the
spec is causal), ties going to the lower J, all of them when there are fewer candidates.
`maskc.selection` computes the choice; `maskc.rules.SelectedBlocksRule` is the resolved mask.
"""

from __future__ import annotations

from typing import Literal

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.primitives.sizes import PositiveSize, size_at
from maskc.rules import Rule, TopkRule


@register
class Topk(Primitive):
    """Top-k block selection (NSA's selected branch): the k best-scoring key blocks per query block."""

    kind = "topk"
    summary = "each query block attends the k key blocks whose mean key best matches its mean query (run time)"

    #: A whole number or an expression in n (`n / 1024`), evaluated when the pattern is lowered.
    blocks: PositiveSize
    #: "head": every head selects its own blocks; "group": the query heads sharing a key/value head
    #: select together, by the mean of their scores.
    share: Literal["head", "group"] = "head"

    def is_dynamic(self) -> bool:
        return True

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        """The placeholder, with `blocks` evaluated at ctx.n (the selection reads a number)."""
        blocks = size_at(self.blocks, ctx.n, path.child("blocks"), 1)
        return TopkRule(self.model_copy(update={"blocks": blocks}), ctx.block_size, ctx.causal, ctx.n, path)  # type: ignore[arg-type]
