"""What every pattern node shares: its pydantic model, the registry, and YAML-style parsing.

A pattern node is a primitive (window, global, ...) or a combinator (union, ...). In a spec
file it is a mapping with one key, the node's kind, whose value holds its parameters; a bare
list is a union. Each kind is a pydantic model registered under its name, so a third party
adds a primitive by defining a model with a `lower` method and calling `register`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from maskc import limits
from maskc.errors import SpecError, SpecValidationError
from maskc.origin import Origin
from maskc.rules import Canvas, Rule

#: True while maskc validates spec data itself: pydantic errors then travel up to be located.
_VALIDATING: ContextVar[bool] = ContextVar("maskc_validating", default=False)


@contextmanager
def validating() -> Iterator[None]:
    """Within: model errors stay pydantic errors, so the caller can add the file, line and path."""
    token = _VALIDATING.set(True)
    try:
        yield
    finally:
        _VALIDATING.reset(token)


def raise_located(err: ValidationError, loc: tuple[Any, ...] = ()) -> None:
    """Called from a model's __init__: a SpecError with the field path, unless maskc is validating a file."""
    if _VALIDATING.get():
        raise err
    raise spec_error(err, loc) from None


#: kind name → model class, for every registered pattern node.
PATTERN_TYPES: dict[str, type[PatternNode]] = {}


@dataclass(frozen=True, eq=False)
class LowerContext:
    """What lowering a node to a rule needs to know: the sequence length, the spec's unit, its grid,
    causality, and the documents of a run-time call when they are known (document ids per position)."""

    n: int
    block_size: int
    canvas: Canvas | None = None
    causal: bool = False
    documents: np.ndarray | None = None

    def fail(self, path: Origin, message: str) -> SpecError:
        return SpecError(message, path=path)


class PatternNode(BaseModel):
    """Base model of primitives and combinators. Subclasses set `kind` and `summary`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: ClassVar[str]
    summary: ClassVar[str]

    def __init__(self, **data: Any) -> None:
        """Built in Python (`maskc.Window(before=-1)`), a bad parameter raises a located SpecError."""
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise_located(err, (self.kind,))

    @field_validator("*", mode="after")
    @classmethod
    def _bounded_integers(cls, value: Any) -> Any:
        """Integer parameters (and integer lists) stay within MAX_PARAMETER, so int64 arithmetic never overflows."""
        numbers = value if isinstance(value, (list, tuple)) else [value]
        big = [v for v in numbers if isinstance(v, int) and not isinstance(v, bool) and v > limits.MAX_PARAMETER]
        if big:
            raise ValueError(limits.exceeds("the value", big[0], "MAX_PARAMETER"))
        return value

    def lower(self, ctx: LowerContext, path: Origin) -> Rule:
        """The element rule of this node at sequence length ctx.n; `path` names it in errors and origins."""
        raise NotImplementedError(f"{type(self).__name__} does not define lower()")

    def node_path(self, where: Origin) -> Origin:
        """This node's path in error messages and origins, given where it stands: `pattern[1].global`."""
        return where.child(self.kind)

    def to_data(self) -> Any:
        """The spec-file form: {kind: parameters}, leaving out unset options."""
        return {self.kind: self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)}

    def is_dynamic(self) -> bool:
        return False


def register(cls: type[PatternNode]) -> type[PatternNode]:
    """Class decorator: make a pattern node available under `cls.kind` in spec files."""
    if cls.kind in PATTERN_TYPES and PATTERN_TYPES[cls.kind] is not cls:
        raise ValueError(f"pattern kind {cls.kind!r} is already registered")
    PATTERN_TYPES[cls.kind] = cls
    return cls


def format_path(loc: tuple[Any, ...]) -> str:
    """('pattern', 1, 'window', 'before') → 'pattern[1].window.before'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def specificity(problem: Any) -> tuple[int, int]:
    """Sort key: deeper field paths first, and a missing field after any other problem at its depth.

    A missing top-level field is rarely the mistake a user is looking for when a primitive deep in
    the pattern is misspelled; the deepest problem names the place to look.
    """
    return (-len(problem["loc"]), problem["type"] == "missing")


def spec_error(err: ValidationError, loc: tuple[Any, ...] = ()) -> SpecError:
    """A pydantic error as maskc's SpecError: the most specific problem, its field path, the count of the rest."""
    problems = sorted(err.errors(), key=specificity)
    first = problems[0]
    message = first["msg"].removeprefix("Value error, ")
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return SpecValidationError(message, path=format_path(loc + tuple(first["loc"])) or None)


def _reraise(err: ValidationError, loc: tuple[Any, ...]) -> None:
    details = [
        {
            "type": PydanticCustomError(e["type"], e["msg"].replace("{", "{{").replace("}", "}}")),
            "loc": loc + tuple(e["loc"]),
            "input": e.get("input"),
        }
        for e in err.errors()
    ]
    raise ValidationError.from_exception_data("pattern", details) from None


def _fail(loc: tuple[Any, ...], kind: str, message: str, value: Any) -> None:
    details = [
        {"type": PydanticCustomError(kind, message.replace("{", "{{").replace("}", "}}")), "loc": loc, "input": value}
    ]
    raise ValidationError.from_exception_data("pattern", details)


def unknown_kind_message(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(PATTERN_TYPES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown primitive {key!r}{hint}; known: {', '.join(sorted(PATTERN_TYPES))}"


def parse_pattern(raw: Any, loc: tuple[Any, ...] = ()) -> PatternNode:
    """Build a pattern node from its spec-file form, with error locations like `[1].window`."""
    if isinstance(raw, PatternNode):
        return raw
    if isinstance(raw, (list, tuple)):
        return PATTERN_TYPES["union"].from_children(raw, loc, bare_list=True)  # type: ignore[attr-defined]
    if not isinstance(raw, dict):
        _fail(
            loc,
            "pattern_type",
            f"expected a pattern (a mapping with one key, or a list), got {type(raw).__name__}",
            raw,
        )
    if len(raw) != 1:
        keys = ", ".join(map(str, raw)) or "none"
        _fail(loc, "pattern_keys", f"a pattern node has exactly one key (its kind), got {len(raw)}: {keys}", raw)
    key, params = next(iter(raw.items()))
    node_type = PATTERN_TYPES.get(str(key))
    if node_type is None:
        _fail(loc, "unknown_primitive", unknown_kind_message(str(key)), raw)
    return node_type.from_params(params, loc + (key,))  # type: ignore[union-attr]


class Primitive(PatternNode):
    """A leaf of the pattern tree. Its parameters come from a mapping (or nothing)."""

    @classmethod
    def from_params(cls, params: Any, loc: tuple[Any, ...]) -> PatternNode:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            _fail(
                loc, "params_type", f"the parameters of {cls.kind!r} are a mapping, got {type(params).__name__}", params
            )
        try:
            with validating():
                return cls.model_validate(params)
        except ValidationError as err:
            _reraise(err, loc)
            raise  # unreachable: _reraise always raises
