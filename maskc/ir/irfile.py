"""Saving and loading compiled patterns: one .npz with the int32 tables and a JSON header.

The header keeps the spec, so loading rebuilds the element rules (random draws are
deterministic) and checks the stored spec against its hash. This module reads and writes
the file only; `CompiledPattern.save` and `CompiledPattern.load` call it, and rebuilding the
rules needs lowering (`maskc.lowering`), never the compiler.

A file is never trusted: every unreadable or malformed file is an IRFileError naming what is
wrong, and `check_tables` requires each stored table to equal the one its rule lays out, so a
truncated, edited or foreign file never becomes a pattern that computes something else.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from maskc import limits
from maskc.errors import IRFileError, MaskcError
from maskc.grid import TileGrid
from maskc.primitives import PatternNode
from maskc.primitives.base import spec_error, validating
from maskc.rules import Rule, layout_rule
from maskc.spec import Spec

FORMAT = "maskc-ir"
VERSION = 1
#: The tables of one layout, as stored (`BlockLayout.arrays()`), with their dtypes.
LAYOUT_DTYPES = {
    "row_ptr": np.int32,
    "col_idx": np.int32,
    "full": np.bool_,
    "col_ptr": np.int32,
    "row_idx": np.int32,
    "full_t": np.bool_,
    "csc_to_csr": np.int32,
}
LAYOUT_TABLES = tuple(LAYOUT_DTYPES)


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
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        os.replace(temporary, target)  # a reader never sees a half-written file
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise MaskcError(f"cannot write the IR to {path}: {err.strerror}") from None


def _read(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The header and the tables of an IR file; any unreadable file is an IRFileError."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > limits.MAX_IR_FILE_BYTES:
            raise IRFileError(path, limits.exceeds("its tables unpack to", unpacked, "MAX_IR_FILE_BYTES") + " bytes")
        with np.load(path, allow_pickle=False) as data:
            tables = {key: data[key] for key in data.files}
    except IRFileError:
        raise
    except FileNotFoundError:
        raise IRFileError(path, "no such file") from None
    except (OSError, ValueError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile, zlib.error) as err:
        raise IRFileError(path, f"not a saved maskc IR file ({type(err).__name__}: {err})") from None
    raw = tables.pop("header", None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise IRFileError(path, "not a saved maskc IR file (no header)")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise IRFileError(path, f"the header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise IRFileError(path, "the header is not a JSON object")
    return header, tables


def _field(path: str | Path, header: dict[str, Any], name: str, kind: type) -> Any:
    value = header.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise IRFileError(path, f"the header's {name!r} is missing or not a {kind.__name__}")
    return value


def _table(
    path: str | Path, tables: dict[str, np.ndarray], key: str, dtype: type, shape: tuple[int, ...]
) -> np.ndarray:
    """One table, checked for presence, dtype and shape before anything indexes with it."""
    if key not in tables:
        raise IRFileError(path, f"table {key!r} is missing")
    array = tables[key]
    if array.dtype != dtype or array.shape != shape:
        raise IRFileError(
            path, f"table {key!r} is {array.dtype}{list(array.shape)}, expected {np.dtype(dtype)}{list(shape)}"
        )
    return array


def _grid(path: str | Path, header: dict[str, Any]) -> TileGrid:
    n, bm, bn = (_field(path, header, name, int) for name in ("n", "block_m", "block_n"))
    if not 0 < n <= limits.MAX_SEQ_LEN:
        raise IRFileError(path, f"the header's n = {n} is not in 1 … {limits.MAX_SEQ_LEN} (maskc.limits.MAX_SEQ_LEN)")
    for side in (bm, bn):
        if side < 16 or side & (side - 1) or side > limits.MAX_TILE_SIDE:
            raise IRFileError(
                path, f"the header's tile {bm} x {bn} is not two powers of two in 16 … {limits.MAX_TILE_SIDE}"
            )
    try:
        limits.check_grid(n, bm, bn)
    except MaskcError as err:
        raise IRFileError(path, str(err)) from None
    return TileGrid(n, bm, bn)


def read_pattern_file(path: str | Path) -> PatternFile:
    """The stored spec (checked against its hash), grid and tables of a saved pattern, each table
    checked for dtype and shape; the tables' content is checked by `check_tables`."""
    header, tables = _read(path)
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise IRFileError(
            path, f"unsupported IR file (format {header.get('format')!r}, version {header.get('version')!r})"
        )
    try:
        with validating():
            spec = Spec.model_validate(_field(path, header, "spec", dict))
    except ValidationError as err:
        raise IRFileError(path, f"the stored spec is not valid: {spec_error(err)}") from None
    if spec.content_hash() != header.get("spec_hash"):
        raise IRFileError(path, "the stored spec does not match its hash; the file was altered")
    grid = _grid(path, header)
    heads = _field(path, header, "heads", int)
    if not 0 < heads <= limits.MAX_HEADS or (spec.head_patterns and heads != spec.heads):
        raise IRFileError(path, f"the header's heads = {heads} does not fit the stored spec")
    patterns, index = spec.distinct_head_patterns(heads)
    if _field(path, header, "layouts", int) != len(patterns):
        raise IRFileError(path, f"the header lists {header['layouts']} layouts; the spec has {len(patterns)}")
    expected = {"head_layout"} | {f"{k}.{name}" for k in range(len(patterns)) for name in LAYOUT_TABLES}
    if set(tables) - expected:
        raise IRFileError(path, f"unexpected tables {sorted(set(tables) - expected)[:5]}")
    head_layout = np.asarray(index, dtype=np.int32)
    if not np.array_equal(_table(path, tables, "head_layout", np.int32, (heads,)), head_layout):
        raise IRFileError(path, "table 'head_layout' does not match the spec's head patterns")
    layouts = []
    for k in range(len(patterns)):
        columns = tables.get(f"{k}.col_idx")
        nnz = len(columns) if columns is not None and columns.ndim == 1 else 0
        shapes = {"row_ptr": (grid.row_tiles + 1,), "col_ptr": (grid.col_tiles + 1,)}
        layouts.append(
            {
                name: _table(path, tables, f"{k}.{name}", dtype, shapes.get(name, (nnz,)))
                for name, dtype in LAYOUT_DTYPES.items()
            }
        )
    return PatternFile(
        spec=spec,
        spec_hash=header["spec_hash"],
        grid=grid,
        heads=heads,
        head_layout=head_layout,
        patterns=tuple(patterns),
        layouts=tuple(layouts),
    )


def _pointers(owner: np.ndarray, count: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=count))]).astype(np.int32)


def check_tables(path: str | Path, k: int, rule: Rule, grid: TileGrid, stored: dict[str, np.ndarray]) -> None:
    """The stored tables of layout k must be exactly those `rule` lays out on `grid` (CSR, flags and CSC)."""
    static = layout_rule(rule.static_bound(lower=True) if rule.dynamic else rule)
    limits.check_grid(grid.n, grid.block_m, grid.block_n, min(static.estimate(grid), grid.row_tiles * grid.col_tiles))
    r, c, full = static.tiles(grid)
    order = np.argsort(c, kind="stable")
    expected = {
        "row_ptr": _pointers(r, grid.row_tiles),
        "col_idx": c.astype(np.int32),
        "full": full.astype(bool),
        "col_ptr": _pointers(c, grid.col_tiles),
        "row_idx": r[order].astype(np.int32),
        "full_t": full[order].astype(bool),
        "csc_to_csr": order.astype(np.int32),
    }
    for name, want in expected.items():
        found = stored[name]
        if found.shape != want.shape or not np.array_equal(found, want):
            where = "" if found.shape != want.shape else f" (first difference at entry {int(np.argmax(found != want))})"
            raise IRFileError(
                path,
                f"table '{k}.{name}' does not match the layout its stored spec compiles to{where}; "
                "the file was altered or written by another version",
            )
