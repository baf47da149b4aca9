"""Saving and loading compiled patterns: one .npz with the int32 tables and a JSON header.

The header keeps the spec, so loading rebuilds the element rules (random draws are
deterministic) and checks the stored spec against its hash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from maskc.errors import MaskcError
from maskc.grid import TileGrid
from maskc.ir import BlockLayout, CompiledPattern
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
    try:
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    except OSError as err:
        raise MaskcError(f"cannot write the IR to {path}: {err.strerror}") from None


def load_pattern(path: str | Path) -> CompiledPattern:
    from maskc.compiler import lower_pattern, pattern_path

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
    grid = TileGrid(header["n"], header["block_m"], header["block_n"])
    patterns, index = spec.distinct_head_patterns(header["heads"])
    layouts = []
    for k, node in enumerate(patterns):
        fields = {
            name: tables[f"{k}.{name}"]
            for name in ("row_ptr", "col_idx", "full", "col_ptr", "row_idx", "full_t", "csc_to_csr")
        }
        layouts.append(
            BlockLayout(grid=grid, rule=lower_pattern(spec, node, grid.n, pattern_path(spec, node)), **fields)
        )
    return CompiledPattern(
        spec=spec,
        spec_hash=header["spec_hash"],
        n=grid.n,
        block_m=grid.block_m,
        block_n=grid.block_n,
        heads=header["heads"],
        layouts=tuple(layouts),
        head_layout=np.asarray(index, dtype=np.int32),
    )
