"""Naming for generated kernel code: `emit.emit_rule` writes expressions, this collects their arguments.

Emission writes Triton source text only; `codegen` turns the expressions and the argument
list into a kernel module. Argument values are passed at launch, so
the source depends on the rule's structure and not on n or on parameter values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class KernelArg:
    """One argument of a generated kernel: a compile-time integer or a lookup table."""

    name: str
    kind: str  # "constexpr", "int" (runtime scalar), "table" (int32 pointer) or "input" (per call)
    #: the integer or table; for "input", the name of the tensor or number each call supplies
    value: int | np.ndarray | str


@dataclass
class TritonEmitter:
    """Collects the arguments that emitted expressions refer to, with unique names."""

    q: str = "q_idx"
    k: str = "k_idx"
    #: The batch element and the call's table index of the tile being masked (run-time inputs only).
    batch: str = "b_idx"
    table_index: str = "t_idx"
    #: Names of the tile's first query and key positions and of the compile-time flag saying that q
    #: and k are the tile's own positions (contiguous, each range starting at a multiple of its
    #: length, as the kernels' tiles are); None once positions are read through tables (`remapped`).
    tile: tuple[str, str, str] | None = None
    prefix: str = "r"
    args: list[KernelArg] = field(default_factory=list)

    def constant(self, value: int, hint: str) -> str:
        """A compile-time integer argument; returns its name."""
        name = f"{self.prefix}{len(self.args)}_{hint}"
        self.args.append(KernelArg(name, "constexpr", int(value)))
        return name

    def runtime(self, value: int, hint: str) -> str:
        """An integer passed at launch without specializing the kernel (n, table lengths)."""
        name = f"{self.prefix}{len(self.args)}_{hint}"
        self.args.append(KernelArg(name, "int", int(value)))
        return name

    def table(self, values: np.ndarray, hint: str) -> str:
        """An int32 lookup table passed as a pointer; returns its name."""
        name = f"{self.prefix}{len(self.args)}_{hint}"
        self.args.append(KernelArg(name, "table", np.ascontiguousarray(values, dtype=np.int32)))
        return name

    def call_input(self, key: str, hint: str) -> str:
        """A value that each call supplies (documents, selected blocks), named by `key`; returns its name.

        Tensors are indexed per batch element (`batch`) or per table (`table_index`) by the expression.
        """
        name = f"{self.prefix}{len(self.args)}_{hint}"
        self.args.append(KernelArg(name, "input", key))
        return name

    def remapped(self, q: str, k: str) -> TritonEmitter:
        """An emitter over other position expressions (a pass's position tables, cluster order), sharing
        this one's arguments; the tile's first positions no longer describe them, so it has none."""
        return replace(self, q=q, k=k, tile=None)

    def structure_key(self, expression: str) -> str:
        """What the generated source depends on: the expression text and argument kinds."""
        kinds = ",".join(f"{a.name}:{a.kind}" for a in self.args)
        return f"{expression}|{kinds}"
