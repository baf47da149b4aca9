"""Saving and loading compiled patterns: one .npz with the int32 tables and a JSON header.

The header keeps the spec, so loading rebuilds the element rules (random draws are
deterministic) and checks the stored spec against its hash. A file is never trusted: loading
compiles the stored spec again and requires every table to be equal to the one it gives, so a
truncated, edited or foreign file is refused with an IRFileError naming what is wrong.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from maskc import limits
from maskc.errors import IRFileError, MaskcError
from maskc.ir import BlockLayout, CompiledPattern
from maskc.primitives.base import spec_error, validating
from maskc.spec import Spec

FORMAT = "maskc-ir"
VERSION = 1


def save_pattern(pattern: CompiledPattern, path: str | Path) -> None:
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


#: Every table of a layout, with the dtype a saved file must hold it in.
_TABLES = {
    "row_ptr": np.int32,
    "col_idx": np.int32,
    "full": np.bool_,
    "col_ptr": np.int32,
    "row_idx": np.int32,
    "full_t": np.bool_,
    "csc_to_csr": np.int32,
}


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
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
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


def _field(path: str | Path, header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise IRFileError(path, f"the header's {name!r} is missing or not a {getattr(kind, '__name__', 'value')}")
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


def _check_layout(path: str | Path, k: int, stored: dict[str, np.ndarray], built: BlockLayout) -> None:
    """The file's tables of layout k, against the layout its spec compiles to (exact equality)."""
    grid = built.grid
    nnz = len(stored[f"{k}.col_idx"])
    shapes = {"row_ptr": (grid.row_tiles + 1,), "col_ptr": (grid.col_tiles + 1,)}
    for name, dtype in _TABLES.items():
        _table(path, stored, f"{k}.{name}", dtype, shapes.get(name, (nnz,)))
    for name, expected in built.arrays().items():
        found = stored[f"{k}.{name}"]
        if found.shape != expected.shape or not np.array_equal(found, expected):
            where = (
                ""
                if found.shape != expected.shape
                else f" (first difference at entry {int(np.argmax(found != expected))})"
            )
            raise IRFileError(
                path,
                f"table '{k}.{name}' does not match the layout its stored spec compiles to{where}; "
                "the file was altered or written by another version",
            )


def load_pattern(path: str | Path) -> CompiledPattern:
    """Read an IR file back, checked: the stored spec is recompiled and every table must match it."""
    from maskc.compiler import compile

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
    n, bm, bn, heads = (_field(path, header, name, int) for name in ("n", "block_m", "block_n", "heads"))
    try:
        pattern = compile(spec, seq_len=n, block_size=(bm, bn), heads=heads)
    except MaskcError as err:
        raise IRFileError(path, f"the stored spec does not compile as saved: {err}") from None
    if _field(path, header, "layouts", int) != len(pattern.layouts):
        raise IRFileError(path, f"the header lists {header['layouts']} layouts; the spec has {len(pattern.layouts)}")
    expected = {"head_layout"} | {f"{k}.{name}" for k in range(len(pattern.layouts)) for name in _TABLES}
    if set(tables) - expected:
        raise IRFileError(path, f"unexpected tables {sorted(set(tables) - expected)[:5]}")
    head_layout = _table(path, tables, "head_layout", np.int32, (heads,))
    if not np.array_equal(head_layout, pattern.head_layout):
        raise IRFileError(path, "table 'head_layout' does not match the spec's head patterns")
    for k, layout in enumerate(pattern.layouts):
        _check_layout(path, k, tables, layout)
    return pattern
