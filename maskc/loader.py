"""Reading spec files: safe YAML, a size limit, and errors that name file, line and field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from maskc.errors import SpecError
from maskc.primitives.base import format_path
from maskc.spec import Spec

#: Spec files larger than this are refused before parsing.
MAX_SPEC_BYTES = 1 << 20
#: Most YAML nodes a spec may expand to once aliases are followed (stops "billion laughs").
MAX_SPEC_NODES = 100_000


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


class _SpecLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice (YAML would silently keep the last)."""

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


def _specificity(problem: Any) -> tuple[int, int]:
    """Sort key: deeper field paths first, and a missing field after any other problem at its depth.

    A missing top-level field is rarely the mistake a user is looking for when a primitive deep in
    the pattern is misspelled; the deepest problem names the place to look.
    """
    return (-len(problem["loc"]), problem["type"] == "missing")


def _first_error(err: ValidationError, root: yaml.Node | None, source: str) -> SpecError:
    problems = sorted(err.errors(), key=_specificity)
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


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """A spec from YAML text; raises SpecError with file, line and field path.

    A spec without `name` is named after its file (`default_name`)."""
    if len(text.encode("utf-8", errors="replace")) > MAX_SPEC_BYTES:
        raise SpecError(f"spec is larger than {MAX_SPEC_BYTES} bytes; refusing to parse it", source=source)
    try:
        root = yaml.compose(text, Loader=_SpecLoader)
        if _expanded_size(root) > MAX_SPEC_NODES:
            raise SpecError(f"spec expands to more than {MAX_SPEC_NODES} YAML nodes (aliases included)", source=source)
        data = yaml.load(text, Loader=_SpecLoader)
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
        data["name"] = default_name(source)
    try:
        return Spec.model_validate(data)
    except ValidationError as err:
        raise _first_error(err, root, source) from None


def _parse_path(path: str) -> tuple[Any, ...]:
    """'pattern[1].global.tokens' → ('pattern', 1, 'global', 'tokens')."""
    return tuple(int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", path))


def locate(error: SpecError, source: str | Path) -> SpecError:
    """The error with the spec file and the line of its field path filled in, where they can be read."""
    if error.source is not None:
        return error
    line = None
    try:
        root = yaml.compose(Path(source).read_text(encoding="utf-8"), Loader=_SpecLoader)
        steps = error.origin.path if error.origin is not None else _parse_path(error.path or "")
        line = _line_of(root, steps) if steps else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        pass
    return error.located(source=str(source), line=line)


def load(path: str | Path) -> Spec:
    """Read and validate a spec file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise SpecError(f"cannot read spec file: {err.strerror}", source=str(path)) from None
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"spec file is {size} bytes, over the {MAX_SPEC_BYTES}-byte limit", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read spec file as UTF-8 text: {err}", source=str(path)) from None
    return parse_spec(text, source=str(path))
