"""Host side of long lines run as chunks (tables.py): launch sizes, chunk arguments and workspaces.

A launch whose tables split their long lines runs, besides the other lines' programs, one program
per (chunk, group), each writing a float32 partial to a workspace; a merge launch then combines a
long line's partials (`kernels.forward.maskc_forward_merge`, `kernels.backward.maskc_sum_chunks`).
Without chunks the kernels get placeholders and SPLIT=False, and compile to the unsplit code.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from maskc.tracing import made_once

from .tables import WalkTables


def chunk_programs(tables: WalkTables, groups: int) -> int:
    """Programs of the chunks: one per (chunk, group); 0 without chunks."""
    return tables.chunks * groups


def launch_programs(tables: WalkTables, groups: int) -> int:
    """Programs of one launch: the chunks', then every line not split, for each group."""
    whole = tables.programs - tables.long_lines if tables.split else tables.programs
    return whole * groups + chunk_programs(tables, groups)


#: Columns of a line's partials one merge program sums: a line's tens of partials, summed one after
#: another, read at one SM's bandwidth when a program took the line whole (BigBird's dK and dV sum
#: took 71 µs at n = 32768), so each line's columns are spread over programs of this many.
MERGE_COLUMNS = 32


def merge_columns(*widths: int) -> int:
    """Columns of one merge program's slice: a divisor of every width (head dims, powers of two)."""
    return math.gcd(MERGE_COLUMNS, *widths)


def chunk_args(tables: WalkTables, groups: int) -> tuple[Any, ...]:
    """(chunk_line, chunk_start, chunk_tiles, chunk_programs) as the kernels take them."""
    if not tables.split:
        return tables.order, tables.order, 0, 0
    return tables.chunk_line, tables.chunk_start, tables.chunk_tiles, chunk_programs(tables, groups)


def workspace(programs: int, *shape: int, device: torch.device) -> torch.Tensor:
    """A float32 workspace of one `shape` partial per chunk program; without chunks a placeholder the
    kernels never touch (SPLIT=False), kept per device rather than allocated per launch."""
    if programs == 0:
        return _placeholder(device)
    return torch.empty((programs, *shape), dtype=torch.float32, device=device)


_PLACEHOLDERS: dict[torch.device, torch.Tensor] = {}


def _placeholder(device: torch.device) -> torch.Tensor:
    return made_once(_PLACEHOLDERS, device, lambda: torch.empty(1, dtype=torch.float32, device=device))
