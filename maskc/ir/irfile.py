"""Saving and loading compiled patterns: one .npz with the int32 tables and a JSON header.

The header keeps the spec, so loading rebuilds the element rules (random draws are
deterministic) and checks the stored spec against its hash. This module reads and writes
the file only; `CompiledPattern.save` and `CompiledPattern.load` call it, and rebuilding the
rules needs lowering (`maskc.lowering`), never the compiler.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from maskc.errors import MaskcError
from maskc.grid import TileGrid
from maskc.primitives import PatternNode
from maskc.spec import Spec

FORMAT = "maskc-ir"
VERSION = 1
#: The tables of one layout, as stored (`BlockLayout.arrays()`).
LAYOUT_TABLES = ("row_ptr", "col_idx", "full", "col_ptr", "row_idx", "full_t", "csc_to_csr")


class _Tables(Protocol):
    def arrays(self) -> dict[str, np.ndarray]: ...


class SavedPattern(Protocol):
    """What a saved file holds of a compiled pattern."""

    spec: Spec
    spec_hash: str
    n: int
    block_m: int
    block_n: int
    heads: int
    head_layout: np.ndarray

    @property
    def layouts(self) -> Sequence[_Tables]: ...


@dataclass(frozen=True)
class PatternFile:
    """A saved pattern as read back: its spec, grid, heads and each layout's tables."""

    spec: Spec
    spec_hash: str
    grid: TileGrid
    heads: int
    head_layout: np.ndarray
    #: The distinct head patterns, and the stored tables of each one's layout.
    patterns: tuple[PatternNode, ...]
    layouts: tuple[dict[str, np.ndarray], ...]


def save_pattern(pattern: SavedPattern, path: str | Path) -> None:
    header = {
        "format": FORMAT,
        "version": VERSION,
        "spec": pattern.spec.to_data(),
        "spec_hash": pattern.spec_hash,
        "n": pattern.n,
        "block_m": pattern.block_m,
        "block_n": pattern.block_n,
        "heads": pattern.heads,
        "layouts": len(pattern.layouts),
    }
    arrays: dict[str, Any] = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    arrays["head_layout"] = pattern.head_layout
    for k, layout in enumerate(pattern.layouts):
        for name, array in layout.arrays().items():
            arrays[f"{k}.{name}"] = array
    try:
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    except OSError as err:
        raise MaskcError(f"cannot write the IR to {path}: {err.strerror}") from None


def read_pattern_file(path: str | Path) -> PatternFile:
    """The stored spec (checked against its hash), grid and tables of a saved pattern."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            tables = {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError) as err:
        raise MaskcError(f"{path}: not a saved maskc IR file ({err})") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise MaskcError(
            f"{path}: unsupported IR file (format {header.get('format')!r}, version {header.get('version')})"
        )
    spec = Spec.model_validate(header["spec"])
    if spec.content_hash() != header["spec_hash"]:
        raise MaskcError(f"{path}: the stored spec does not match its hash; the file was altered")
    patterns, index = spec.distinct_head_patterns(header["heads"])
    layouts = tuple({name: tables[f"{k}.{name}"] for name in LAYOUT_TABLES} for k in range(len(patterns)))
    return PatternFile(
        spec=spec,
        spec_hash=header["spec_hash"],
        grid=TileGrid(header["n"], header["block_m"], header["block_n"]),
        heads=header["heads"],
        head_layout=np.asarray(index, dtype=np.int32),
        patterns=tuple(patterns),
        layouts=layouts,
    )
