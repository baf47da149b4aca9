"""union, intersect, difference: combine patterns; a bare list in a spec is a union.

Block classes combine exactly where a closed form exists (a full child makes a union tile
full; an empty child makes an intersection tile empty). The one undecidable case, two or
more partial children meeting in a tile, is settled by `resolve_tiles`.
"""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr, field_validator

from maskc.origin import Origin
from maskc.primitives.base import LowerContext, PatternNode, _fail, parse_pattern, register
from maskc.rules import DifferenceRule, Rule, UnionRule, intersect_rules


class Combinator(PatternNode):
    """A node whose parameters are a list of patterns."""

    of: tuple[PatternNode, ...]
    #: True when written as a bare list, so paths read `pattern[1]` rather than `pattern.union[1]`.
    _bare_list: bool = PrivateAttr(default=False)

    @field_validator("of", mode="before")
    @classmethod
    def _parse_children(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(parse_pattern(item, (k,)) for k, item in enumerate(value))
        return value

    @field_validator("of")
    @classmethod
    def _not_empty(cls, value: tuple[PatternNode, ...]) -> tuple[PatternNode, ...]:
        if not value:
            raise ValueError(f"an empty {cls.kind} has no pattern in it; give at least one")
        return value

    @classmethod
    def from_children(cls, raw: Any, loc: tuple[Any, ...], bare_list: bool = False) -> PatternNode:
        if not isinstance(raw, (list, tuple)):
            _fail(loc, "combinator_type", f"{cls.kind!r} takes a list of patterns, got {type(raw).__name__}", raw)
        cls._check_arity(raw, loc)
        node = cls(of=tuple(parse_pattern(item, loc + (k,)) for k, item in enumerate(raw)))
        node._bare_list = bare_list
        return node

    @classmethod
    def from_params(cls, params: Any, loc: tuple[Any, ...]) -> PatternNode:
        return cls.from_children(params, loc)

    def node_path(self, where: Origin) -> Origin:
        return where if self._bare_list else where.child(self.kind)

    @classmethod
    def _check_arity(cls, raw: Any, loc: tuple[Any, ...]) -> None:
        if len(raw) == 0:
            _fail(loc, "empty_combinator", f"an empty {cls.kind} has no pattern in it; give at least one", raw)

    def to_data(self) -> Any:
        children = [child.to_data() for child in self.of]
        return children if self._bare_list else {self.kind: children}

    def is_dynamic(self) -> bool:
        return any(child.is_dynamic() for child in self.of)

    def _lower_children(self, ctx: LowerContext, path: Origin) -> list[Rule]:
        return [child.lower(ctx, child.node_path(path.child(k))) for k, child in enumerate(self.of)]


@register
class Union(Combinator):
    """Holds where any child holds."""

    kind = "union"
    summary = "holds where any of the patterns holds (a bare list means the same)"

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        paths = [child.node_path(path.child(k)) for k, child in enumerate(self.of)]
        drawn_after = [bool(getattr(child, "exclude", None)) for child in self.of]
        kids = [None if later else child.lower(ctx, p) for child, p, later in zip(self.of, paths, drawn_after)]
        fixed = [(child, kid) for child, kid in zip(self.of, kids) if kid is not None]
        for k, child in enumerate(self.of):
            if drawn_after[k]:  # a random draw that skips what its siblings cover (BigBird)
                kids[k] = child.lower_among(ctx, paths[k], fixed)  # type: ignore[attr-defined]
        return kids[0] if len(kids) == 1 else UnionRule(kids, origin=path)  # type: ignore[arg-type,return-value]


@register
class Intersect(Combinator):
    """Holds where every child holds."""

    kind = "intersect"
    summary = "holds where all of the patterns hold"

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        return intersect_rules(self._lower_children(ctx, path), origin=path)


@register
class Difference(Combinator):
    """Holds where the first child holds and the second does not."""

    kind = "difference"
    summary = "holds where the first pattern holds and the second does not"

    @classmethod
    def _check_arity(cls, raw: Any, loc: tuple[Any, ...]) -> None:
        if len(raw) != 2:
            _fail(loc, "difference_arity", f"difference takes exactly two patterns [a, b], got {len(raw)}", raw)

    @field_validator("of")
    @classmethod
    def _two(cls, value: tuple[PatternNode, ...]) -> tuple[PatternNode, ...]:
        if len(value) != 2:
            raise ValueError(f"difference takes exactly two patterns [a, b], got {len(value)}")
        return value

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        return DifferenceRule(self._lower_children(ctx, path), origin=path)
