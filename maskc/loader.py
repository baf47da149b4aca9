"""Reading spec files: safe YAML, a size limit, and errors that name file, line and field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import ValidationError

from maskc import limits
from maskc.errors import SpecError
from maskc.limits import MAX_SPEC_BYTES, MAX_SPEC_NODES
from maskc.primitives.base import format_path, specificity, validating
from maskc.spec import Spec, printable_text

#: YAML 1.2 core schema: what a plain scalar means (YAML 1.1, PyYAML's default, differs).
_YAML12 = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
)
#: Tag of a plain scalar that YAML 1.1 and 1.2 read differently (`yes`, `1:04`, `010`, `1_000`).
_AMBIGUOUS = "tag:maskc,2026:ambiguous"
#: Longest whole number a spec may spell out: far past MAX_PARAMETER, far below what int() refuses.
_MAX_INT_DIGITS = 100


def _expanded_size(root: yaml.Node | None) -> int:
    """Number of nodes the document has once every alias is expanded (memoized per node)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key not in sizes:
            sizes[key] = MAX_SPEC_NODES + 1  # a cycle counts as too large
            if isinstance(node, yaml.MappingNode):
                total = 1 + sum(size(k) + size(v) for k, v in node.value)
            elif isinstance(node, yaml.SequenceNode):
                total = 1 + sum(size(v) for v in node.value)
            else:
                total = 1
            sizes[key] = min(total, MAX_SPEC_NODES + 1)
        return sizes[key]

    return size(root) if root is not None else 0


#: libyaml's parser when PyYAML was built with it (many times faster on large specs), else PyYAML's own.
_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SpecLoader(_BaseLoader):  # type: ignore[misc,valid-type]
    """YAML's safe loader with YAML 1.2 scalars, refusing a key given twice (YAML would keep the last)
    and a plain scalar that YAML 1.1 reads otherwise (`causal: yes`, `seq_len: 1:04`)."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        tag = super().resolve(kind, value, implicit)
        if kind is yaml.ScalarNode and implicit[0]:
            old = _yaml11_tag(value)
            octal_looking = tag.endswith(":int") and re.match(r"^[-+]?0[0-9]", value)
            if old != tag or octal_looking:
                return _AMBIGUOUS
        return tag

    def construct_ambiguous(self, node: yaml.ScalarNode) -> Any:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"{node.value!r} is ambiguous: YAML 1.1 and YAML 1.2 read it differently; "
            "write true/false, a plain decimal number, or quote it for a string",
            node.start_mark,
        )

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = str(self.construct_scalar(node))
        sign, digits = (-1, value[1:]) if value[0] == "-" else (1, value.lstrip("+"))
        base = {"0o": 8, "0x": 16}.get(digits[:2], 10)
        if len(digits) > _MAX_INT_DIGITS:  # int() itself refuses past 4300 digits, with a ValueError
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"a whole number of {len(digits)} digits is past every limit "
                f"(the largest parameter is 2**62, maskc.limits.MAX_PARAMETER)",
                node.start_mark,
            )
        return sign * int(digits[2:] if base != 10 else digits, base)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        return float(str(self.construct_scalar(node)).lower().replace(".inf", "inf").replace(".nan", "nan"))

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml11_tag(value: str) -> str:
    """The tag YAML 1.1 (PyYAML's safe loader) gives a plain scalar."""
    resolvers = yaml.SafeLoader.yaml_implicit_resolvers
    for tag, regexp in resolvers.get(value[:1] if value else "", []) + resolvers.get(None, []):
        if regexp.match(value):
            return tag
    return "tag:yaml.org,2002:str"


for _tag, _pattern, _first in _YAML12:
    _SpecLoader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))
_SpecLoader.add_constructor(_AMBIGUOUS, _SpecLoader.construct_ambiguous)
_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)
_SpecLoader.add_constructor("tag:yaml.org,2002:float", _SpecLoader.construct_yaml_float)


def _check_depth(text: str, source: str) -> None:
    """Refuse nesting deeper than the pattern limit allows, before the (recursive) composer runs.

    Parsing to events keeps its own stack (no recursion), so any depth is safe to measure here."""
    depth, deepest = 0, 3 * limits.MAX_NESTING_DEPTH + 8
    message = (
        f"the YAML nests deeper than {deepest} levels, more than a pattern within the nesting "
        f"limit of {limits.MAX_NESTING_DEPTH} (maskc.limits.MAX_NESTING_DEPTH) needs"
    )
    try:
        for event in yaml.parse(text, Loader=_SpecLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > deepest:
                    raise SpecError(message, source=source, line=event.start_mark.line + 1)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as err:
        # libyaml (PyYAML >= 6.0.4) stops its own scanner at a fixed nesting level, before our count
        # reaches `deepest`; that is the same refusal, so say it the same way.
        if "nesting depth" not in str(err.problem):
            raise
        mark = err.problem_mark
        raise SpecError(message, source=source, line=mark.line + 1 if mark else None) from None


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at `loc`, or of its nearest ancestor that exists."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    return node.start_mark.line + 1 if node is not None else line


def _first_error(err: ValidationError, root: yaml.Node | None, source: str) -> SpecError:
    problems = sorted(err.errors(), key=specificity)
    first = problems[0]
    loc = tuple(first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return SpecError(message, source=source, path=format_path(loc) or None, line=_line_of(root, loc))


def default_name(source: str) -> str:
    """The name of a spec that gives none: its file's stem, or "spec" for text from nowhere."""
    stem = Path(source).stem if source and not source.startswith("<") else ""
    return stem or "spec"


def _name_from_file(source: str) -> str:
    """`default_name`, refused (the file named as the reason, not a `name:` line) when the stem is
    not printable text."""
    name = default_name(source)
    try:
        return printable_text("name", name)
    except ValueError as err:
        raise SpecError(f"the spec gives no name, and its file's stem cannot be one: {err}; add `name:`") from None


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """A spec from YAML text; raises SpecError with file, line and field path.

    A spec without `name` is named after its file (`default_name`)."""
    if len(text.encode("utf-8", errors="replace")) > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec is larger than {MAX_SPEC_BYTES} bytes (maskc.limits.MAX_SPEC_BYTES); refusing to parse it",
            source=source,
        )
    try:
        _check_depth(text, source)
        loader = _SpecLoader(text)
        try:
            root = loader.get_single_node()
            if _expanded_size(root) > MAX_SPEC_NODES:
                raise SpecError(
                    f"spec expands to more than {MAX_SPEC_NODES} YAML nodes, aliases included "
                    "(maskc.limits.MAX_SPEC_NODES)",
                    source=source,
                )
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError(f"not valid YAML: {err.problem or err}", source=source, line=line) from None
    except yaml.YAMLError as err:
        raise SpecError(f"not valid YAML: {err}", source=source) from None
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(f"a spec is a YAML mapping with a pattern, but this file is {kind}", source=source)
    if "name" not in data:
        data["name"] = _name_from_file(source)
    try:
        with validating():
            return Spec.model_validate(data)
    except ValidationError as err:
        raise _first_error(err, root, source) from None


def _parse_path(path: str) -> tuple[Any, ...]:
    """'pattern[1].global.tokens' → ('pattern', 1, 'global', 'tokens')."""
    return tuple(int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", path))


def locate_text(error: SpecError, text: str, source: str) -> SpecError:
    """The error with `source` and the line of its field path in the spec text `text` filled in."""
    if error.source is not None:
        return error
    line = None
    try:
        root = yaml.compose(text, Loader=_SpecLoader)
        steps = error.origin.path if error.origin is not None else _parse_path(error.path or "")
        line = _line_of(root, steps) if steps else None
    except yaml.YAMLError:
        pass
    return error.located(source=source, line=line)


def locate(error: SpecError, source: str | Path) -> SpecError:
    """The error with the spec file and the line of its field path filled in, where they can be read."""
    if error.source is not None:
        return error
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return error.located(source=str(source))
    return locate_text(error, text, str(source))


def load(path: str | Path) -> Spec:
    """Read and validate a spec file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise SpecError(f"cannot read spec file: {err.strerror}", source=str(path)) from None
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec file is {size} bytes, over the {MAX_SPEC_BYTES}-byte limit (maskc.limits.MAX_SPEC_BYTES)",
            source=str(path),
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read spec file as UTF-8 text: {err}", source=str(path)) from None
    return parse_spec(text, source=str(path))
