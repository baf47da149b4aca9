"""The spec: a named pattern with its sequence length, causality, block unit, heads and layers."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from maskc import limits
from maskc.canvas import Grid
from maskc.limits import MAX_SEQ_LEN, exceeds
from maskc.primitives import Dense, PatternNode, Window, parse_pattern
from maskc.primitives.base import _fail, raise_located


class _Model(BaseModel):
    """Built in Python, a bad field raises maskc's SpecError with its path, not a pydantic error."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise_located(err)


def _tree_size(node: PatternNode) -> tuple[int, int]:
    """(depth, node count) of a pattern tree, walked without recursion."""
    depth, count, stack = 0, 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        depth, count = max(depth, level), count + 1
        stack.extend((child, level + 1) for child in getattr(current, "of", ()))
    return depth, count


def _parse_root(value: Any) -> PatternNode:
    node = parse_pattern(value)
    depth, count = _tree_size(node)
    if depth > limits.MAX_NESTING_DEPTH:
        raise ValueError(exceeds("the pattern's nesting depth", depth, "MAX_NESTING_DEPTH"))
    if count > limits.MAX_PATTERN_NODES:
        raise ValueError(exceeds("the pattern's node count", count, "MAX_PATTERN_NODES"))
    return node


#: A pattern field: accepts the spec-file form (mapping or list) or pattern node objects.
Pattern = Annotated[
    PatternNode,
    BeforeValidator(_parse_root),
    PlainSerializer(lambda node: node.to_data(), return_type=Any),
]


class HeadPattern(_Model):
    """A pattern that replaces the top-level one for the listed heads."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    heads: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    pattern: Pattern


#: What mixes tokens in a layer: attention (a mask), a causal recurrence, or nothing.
Mixer = Literal["attention", "recurrent", "identity"]


class LayerEntry(_Model):
    """`count` consecutive layers, using `pattern` or, without one, the spec's own pattern and heads.

    `mixer: recurrent` (a state-space or linear-recurrent layer such as Mamba) and `mixer: identity`
    are layers without attention: in the first every earlier position reaches the current one
    (j ≤ i), in the second a token keeps only its own state. Neither has a pattern or attention FLOPs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    count: PositiveInt = 1
    mixer: Mixer = "attention"
    pattern: Pattern | None = None

    @field_validator("pattern")
    @classmethod
    def _attention_only(cls, pattern: PatternNode | None, info: ValidationInfo) -> PatternNode | None:
        mixer = info.data.get("mixer", "attention")
        if pattern is not None and mixer != "attention":
            raise ValueError(f"a `mixer: {mixer}` layer has no attention pattern; leave `pattern` out")
        return pattern


#: Unicode categories a name or description may not hold: control (NUL, ESC, …), format (bidi
#: overrides such as U+202E, zero-width characters) and line/paragraph separators. Both are printed
#: as they are (terminal, pictures, JSON), so such a character could hide or reorder what is shown.
_UNPRINTABLE = ("Cc", "Cf", "Zl", "Zp")


def printable_text(field: str, value: str, allowed: str = "") -> str:
    """`value`, refused when it holds a character of _UNPRINTABLE (other than those `allowed`),
    naming the first one by code point and Unicode name."""
    for at, char in enumerate(value):
        if char not in allowed and unicodedata.category(char) in _UNPRINTABLE:
            what = unicodedata.name(char, unicodedata.category(char))
            raise ValueError(
                f"control or format character U+{ord(char):04X} ({what}) at index {at}: the {field} is printed "
                "as it is, so only printable characters are allowed"
            )
    return value


class Spec(_Model):
    """A sparse attention pattern as declared by a user."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = "spec"
    description: str = ""
    seq_len: Annotated[int, Field(gt=0, le=MAX_SEQ_LEN)] | None = None
    grid: Grid | None = None
    causal: bool = False
    block_size: PositiveInt = 64
    heads: PositiveInt | None = None
    pattern: Pattern
    head_patterns: list[HeadPattern] = Field(default_factory=list)
    layers: list[LayerEntry] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        return printable_text("name", value)

    @field_validator("description")
    @classmethod
    def _printable_description(cls, value: str) -> str:
        return printable_text("description", value, allowed="\n\t")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"block_size must be a power of two, got {value}")
        if value > limits.MAX_TILE_SIDE:
            raise ValueError(exceeds("block_size", value, "MAX_TILE_SIDE"))
        return value

    @field_validator("heads")
    @classmethod
    def _heads_bounded(cls, value: int | None) -> int | None:
        if value is not None and value > limits.MAX_HEADS:
            raise ValueError(exceeds("heads", value, "MAX_HEADS"))
        return value

    @field_validator("layers")
    @classmethod
    def _schedule_bounded(cls, entries: list[LayerEntry]) -> list[LayerEntry]:
        total = sum(entry.count for entry in entries)
        if total > limits.MAX_SCHEDULE_LAYERS:
            raise ValueError(exceeds("the layer schedule's total count", total, "MAX_SCHEDULE_LAYERS"))
        return entries

    @field_validator("grid")
    @classmethod
    def _grid_fits_seq_len(cls, grid: Grid | None, info: ValidationInfo) -> Grid | None:
        n = info.data.get("seq_len")
        if grid is not None and n is not None and n != grid.tokens:
            text = f" + {grid.text} text tokens" if grid.text else ""
            raise ValueError(f"the grid {grid.shape}{text} holds {grid.tokens} tokens, but seq_len is {n}")
        return grid

    @model_validator(mode="after")
    def _seq_len_from_grid(self) -> Spec:
        """A grid fixes the sequence length; a frozen model sets it once, here."""
        if self.grid is not None and self.seq_len is None:
            object.__setattr__(self, "seq_len", self.grid.tokens)
        return self

    @field_validator("head_patterns")
    @classmethod
    def _heads_consistent(cls, entries: list[HeadPattern], info: ValidationInfo) -> list[HeadPattern]:
        heads = info.data.get("heads")
        if entries and heads is None:
            raise ValueError("head_patterns needs `heads` (the number of attention heads)")
        seen: dict[int, int] = {}
        for k, entry in enumerate(entries):
            for h in entry.heads:
                if h >= heads:
                    _fail((k, "heads"), "head_index", f"head {h} is not below heads = {heads}", h)
                if h in seen:
                    _fail((k, "heads"), "head_twice", f"head {h} already has a pattern in head_patterns[{seen[h]}]", h)
                seen[h] = k
        return entries

    def pattern_of_head(self, head: int) -> PatternNode:
        for entry in self.head_patterns:
            if head in entry.heads:
                return entry.pattern
        return self.pattern

    def distinct_head_patterns(self, heads: int) -> tuple[list[PatternNode], list[int]]:
        """The distinct patterns over `heads` heads, and for each head the index of its pattern."""
        patterns: list[PatternNode] = []
        keys: dict[str, int] = {}

        def number(node: PatternNode) -> int:
            key = json.dumps(node.to_data(), sort_keys=True)
            if key not in keys:
                keys[key] = len(patterns)
                patterns.append(node)
            return keys[key]

        # Heads without an entry share the top-level pattern; numbering follows the first head of each.
        owner = {h: entry.pattern for entry in self.head_patterns for h in entry.heads if h < heads}
        default = next((h for h in range(heads) if h not in owner), None)
        index = [0] * heads
        for h in sorted([*owner, *([] if default is None else [default])]):
            index[h] = number(owner.get(h, self.pattern))
        if default is not None:
            index = [index[default] if h not in owner else index[h] for h in range(heads)]
        return patterns, index

    def layer_schedule(self) -> list[tuple[int, Spec]]:
        """(count, spec of those layers) in order; one entry for a spec without `layers`.

        A layer without attention appears as the spec of the relation it mixes tokens by: causal
        dense for `recurrent`, self only for `identity` (`layer_mixers` tells them apart).
        """
        if not self.layers:
            return [(1, self)]
        return [(entry.count, self._layer_spec(entry)) for entry in self.layers]

    def layer_mixers(self) -> list[Mixer]:
        """The mixer of each `layer_schedule` entry."""
        return [entry.mixer for entry in self.layers] or ["attention"]

    def _layer_spec(self, entry: LayerEntry) -> Spec:
        if entry.mixer == "attention" and entry.pattern is None:
            return self
        update: dict[str, Any] = {"head_patterns": [], "layers": []}
        if entry.mixer == "attention":
            update["pattern"] = entry.pattern
        else:
            update["heads"] = None
            update["pattern"] = Dense() if entry.mixer == "recurrent" else Window(before=0, after=0)
            update["causal"] = self.causal or entry.mixer == "recurrent"
        return self.model_copy(update=update)

    def is_dynamic(self) -> bool:
        nodes = [self.pattern] + [e.pattern for e in self.head_patterns] + [e.pattern for e in self.layers if e.pattern]
        return any(node.is_dynamic() for node in nodes)

    def to_data(self) -> dict[str, Any]:
        """The spec-file form (what `maskc.load` reads back)."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)

    def content_hash(self) -> str:
        """A hash of what the spec means (name and description left out)."""
        data = self.to_data()
        data.pop("name", None)
        data.pop("description", None)
        data["causal"], data["block_size"] = self.causal, self.block_size
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
