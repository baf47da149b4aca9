"""Where something came from in its spec: a field path and, for one part of a primitive, its name.

Rules carry one (`Rule.origin`), and spec errors raised while lowering (`SpecError.path`).
`str()` gives the text errors and pictures print, e.g. `pattern[1].global(rows)` or
`head_patterns[0].pattern.axial(column)`; code that needs the structure reads the fields
instead of parsing that text back.
"""

from __future__ import annotations

from dataclasses import dataclass

#: One step of a field path: a field name, or an index into a list.
Step = str | int


@dataclass(frozen=True)
class Origin:
    """A spec field path (`("pattern", 1, "global")`) and an optional part (`"rows"`)."""

    path: tuple[Step, ...] = ()
    part: str = ""

    def child(self, *steps: Step) -> Origin:
        """The origin of a node below this one, e.g. `.child(1)` or `.child("window")`."""
        return Origin(self.path + steps)

    def with_part(self, part: str) -> Origin:
        """The same node, naming one part of it (the rows of a global, the row band of axial)."""
        return Origin(self.path, part)

    def pattern_steps(self) -> tuple[int, ...] | None:
        """The child indices from the pattern's root to this node, or None outside a pattern."""
        if "pattern" not in self.path:
            return None
        below = self.path[self.path.index("pattern") + 1 :]
        return tuple(step for step in below if isinstance(step, int))

    def __str__(self) -> str:
        text = ""
        for step in self.path:
            text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
        return f"{text}({self.part})" if self.part else text

    def __bool__(self) -> bool:
        return bool(self.path or self.part)


#: No origin: a rule made by code rather than by a spec's pattern.
NOWHERE = Origin()


def named(text: str) -> Origin:
    """An origin outside the spec's fields, such as "causal": one step that prints as itself."""
    return Origin((text,))
