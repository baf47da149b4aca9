"""neighborhood and tiles: NATTEN's neighbourhood attention and STA's sliding-tile attention on a grid.

Both need the spec's `grid` (its canvas gives every position its coordinates). Text tokens
after the grid follow STA's convention unless `text: none`: grid queries attend every
text token, and text queries attend everything.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, Primitive, register
from maskc.rules import (
    AxisWindow,
    Canvas,
    GridWindowRule,
    Rule,
    TokenSet,
    TokenSetRule,
    UnionRule,
    natten_axis,
    sta_axis,
)

#: What a grid primitive says about text tokens: STA's convention ("all") or nothing ("none").
TextRule = Literal["all", "none"]


def _canvas(ctx: LowerContext, path: Origin, kind: str) -> Canvas:
    if ctx.canvas is None:
        raise ctx.fail(path, f"{kind} needs the spec's grid (add `grid: {{shape: [H, W]}}` or [T, H, W])")
    return ctx.canvas


def _per_axis(ctx: LowerContext, path: Origin, name: str, values: list, canvas: Canvas) -> None:
    if len(values) != canvas.ndim:
        raise ctx.fail(
            path.child(name),
            f"{name} has {len(values)} entries but the grid has {canvas.ndim} axes {list(canvas.shape)}",
        )


def _with_text(rule: Rule, canvas: Canvas, text: TextRule, path: Origin) -> Rule:
    """STA's text convention: grid queries attend all text keys, text queries attend every key."""
    if text == "none" or canvas.text == 0:
        return rule
    tokens = TokenSet(canvas.n, tokens=list(range(canvas.cells, canvas.n)))
    rows = TokenSetRule(tokens, "rows", path.with_part("text_queries"))
    columns = TokenSetRule(tokens, "columns", path.with_part("text_keys"))
    return UnionRule([rule, rows, columns], origin=path)


@register
class Neighborhood(Primitive):
    """NATTEN: per axis, the kernel's centre is the query's coordinate clamped into the canvas."""

    kind = "neighborhood"
    summary = "NATTEN neighbourhood on the grid: a kernel of cells around each query, centre clamped to the canvas"

    kernel: list[PositiveInt] = Field(min_length=1, max_length=3)
    dilation: list[PositiveInt] | None = None
    causal: list[bool] | None = None
    text: TextRule = "all"

    def axes(self, ctx: LowerContext, path: Origin, canvas: Canvas) -> list[AxisWindow]:
        """One window per axis, after checking the parameters against the canvas."""
        _per_axis(ctx, path, "kernel", self.kernel, canvas)
        dilation = self.dilation or [1] * canvas.ndim
        causal = self.causal or [False] * canvas.ndim
        _per_axis(ctx, path, "dilation", dilation, canvas)
        _per_axis(ctx, path, "causal", causal, canvas)
        out = []
        for a, (size, k, d, c) in enumerate(zip(canvas.shape, self.kernel, dilation, causal)):
            if not c and k % 2 == 0:
                raise ctx.fail(
                    path.child("kernel", a), f"kernel side {k} is even; a centred (non-causal) axis needs odd"
                )
            if k * d > size:
                spread = f"kernel {k} × dilation {d} = {k * d}" if d > 1 else f"kernel {k}"
                raise ctx.fail(path.child("kernel", a), f"{spread} is larger than the grid's axis {a} of size {size}")
            out.append(natten_axis(size, k, d, c))
        return out

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        canvas = _canvas(ctx, path, self.kind)
        params = "kernel " + "x".join(map(str, self.kernel))
        if self.dilation and any(d > 1 for d in self.dilation):
            params += " dilation " + "x".join(map(str, self.dilation))
        if self.causal and any(self.causal):
            params += " causal " + "".join("c" if c else "-" for c in self.causal)
        rule = GridWindowRule(canvas, self.axes(ctx, path, canvas), "neighborhood", params, origin=path)
        return _with_text(rule, canvas, self.text, path)


@register
class Tiles(Primitive):
    """STA: kernels in tokens, multiples of the tile; windows of whole tiles, centre clamped in tiles."""

    kind = "tiles"
    summary = "sliding-tile attention (STA): a kernel of whole tiles around the query's tile, clamped to the canvas"

    tile: list[PositiveInt] = Field(min_length=1, max_length=3)
    kernel: list[PositiveInt] = Field(min_length=1, max_length=3)
    text: TextRule = "all"

    def axes(self, ctx: LowerContext, path: Origin, canvas: Canvas) -> list[AxisWindow]:
        _per_axis(ctx, path, "tile", self.tile, canvas)
        _per_axis(ctx, path, "kernel", self.kernel, canvas)
        out = []
        for a, (size, t, k) in enumerate(zip(canvas.shape, self.tile, self.kernel)):
            if size % t:
                raise ctx.fail(
                    path.child("tile", a), f"tile side {t} does not divide the grid's axis {a} of size {size}"
                )
            if k % t:
                raise ctx.fail(path.child("kernel", a), f"kernel {k} is not a multiple of the tile side {t}")
            if k > size:
                raise ctx.fail(path.child("kernel", a), f"kernel {k} is larger than the grid's axis {a} of size {size}")
            out.append(sta_axis(size, t, k))
        return out

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        canvas = _canvas(ctx, path, self.kind)
        params = f"kernel {'x'.join(map(str, self.kernel))} tile {'x'.join(map(str, self.tile))}"
        rule = GridWindowRule(canvas, self.axes(ctx, path, canvas), "tiles", params, origin=path)
        return _with_text(rule, canvas, self.text, path)
