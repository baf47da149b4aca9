"""Files maskc reads back, damaged on purpose: saved IR files and the generated-kernel cache.

Every damaged IR file must give an IRFileError naming what is wrong (never a raw zip, EOF, key,
attribute or pydantic error, never a pattern that computes something else). A damaged kernel
cache file must never be executed: the next call regenerates it and computes the right output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from clitools import ROOT

import maskc
from maskc.errors import IRFileError

# ----------------------------------------------------------------------------- IR files


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """A saved IR file (Longformer at n = 1024, two layouts via head_patterns) and its tables."""
    spec = maskc.Spec(
        name="tamper",
        seq_len=1000,
        heads=2,
        pattern=[maskc.Window(size=40), maskc.Global(tokens=[0, 77])],
        head_patterns=[{"heads": [1], "pattern": {"stride": {"every": 50}}}],
    )
    path = tmp_path_factory.mktemp("ir") / "pattern.npz"
    maskc.compile(spec, block_size=(64, 32)).save(path)
    with np.load(path) as data:
        return path, {key: data[key] for key in data.files}


def _rewrite(tables: dict[str, np.ndarray], path: Path, change: Callable[[dict[str, np.ndarray]], None]) -> Path:
    changed = {key: value.copy() for key, value in tables.items()}
    change(changed)
    out = path.with_name("tampered.npz")
    np.savez(out, **changed)
    return out


def _header(tables: dict[str, np.ndarray], **fields: object) -> np.ndarray:
    header = {**json.loads(bytes(tables["header"])), **fields}
    return np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


def _set(key: str, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict[str, np.ndarray]], None]:
    return lambda t: t.__setitem__(key, make(t[key]))


def _poke(key: str, index: int, value: int) -> Callable[[dict[str, np.ndarray]], None]:
    def change(t: dict[str, np.ndarray]) -> None:
        t[key][index] = value

    return change


TABLE_CHANGES: dict[str, tuple[Callable[[dict[str, np.ndarray]], None], str]] = {
    "all_full": (_set("0.full", np.ones_like), r"table '0\.full' does not match"),
    "col_idx_negative": (_poke("0.col_idx", 3, -5), r"table '0\.col_idx' does not match .*entry 3"),
    "col_idx_zero": (_set("0.col_idx", np.zeros_like), r"table '0\.col_idx' does not match"),
    "col_idx_past_grid": (_poke("0.col_idx", 0, 1000), r"table '0\.col_idx' does not match .*entry 0"),
    "row_ptr_not_monotone": (_poke("1.row_ptr", 2, 10**6), r"table '1\.row_ptr' does not match"),
    "csc_inconsistent": (_poke("0.csc_to_csr", 0, 1), r"table '0\.csc_to_csr' does not match"),
    "full_t_flipped": (_set("1.full_t", np.logical_not), r"table '1\.full_t' does not match"),
    "wrong_dtype": (
        _set("0.col_idx", lambda a: a.astype(np.int64)),
        r"table '0\.col_idx' is int64\[\d+\], expected int32",
    ),
    "wrong_shape": (_set("0.row_ptr", lambda a: a[:-1]), r"table '0\.row_ptr' is int32\[\d+\], expected int32"),
    "missing_table": (lambda t: t.pop("1.row_idx"), r"table '1\.row_idx' is missing"),
    "extra_table": (lambda t: t.__setitem__("2.row_ptr", t["0.row_ptr"]), r"unexpected tables \['2\.row_ptr'\]"),
    "head_layout": (_set("head_layout", lambda a: a[::-1].copy()), r"table 'head_layout' does not match"),
    "missing_header": (lambda t: t.pop("header"), r"not a saved maskc IR file \(no header\)"),
    "header_not_json": (
        lambda t: t.__setitem__("header", np.frombuffer(b"{nope", dtype=np.uint8)),
        r"header is not JSON",
    ),
    "header_not_object": (
        lambda t: t.__setitem__("header", np.frombuffer(b"[1]", dtype=np.uint8)),
        r"not a JSON object",
    ),
    "header_wrong_version": (lambda t: t.__setitem__("header", _header(t, version=99)), r"unsupported IR file"),
    "header_missing_n": (
        lambda t: t.__setitem__("header", _header(t, n=None)),
        r"header's 'n' is missing or not a int",
    ),
    "header_n_text": (lambda t: t.__setitem__("header", _header(t, n="1000")), r"header's 'n' is missing"),
    "header_n_changed": (
        lambda t: t.__setitem__("header", _header(t, n=2000)),
        r"is int32\[17\], expected int32\[33\]",
    ),
    "header_n_huge": (
        lambda t: t.__setitem__("header", _header(t, n=2**40)),
        r"the header's n = 1099511627776 is not in 1 … 2147483647 \(maskc\.limits\.MAX_SEQ_LEN\)",
    ),
    "header_tile_changed": (lambda t: t.__setitem__("header", _header(t, block_m=32)), r"table '0\.row_ptr' is int32"),
    "header_heads_changed": (lambda t: t.__setitem__("header", _header(t, heads=3)), r"heads = 3 does not fit"),
    "spec_edited": (
        lambda t: t.__setitem__("header", _header(t, spec={"name": "tamper", "pattern": {"dense": {}}})),
        r"the stored spec does not match its hash",
    ),
    "spec_invalid": (lambda t: t.__setitem__("header", _header(t, spec={"name": 3})), r"the stored spec is not valid"),
    "pickled_objects": (
        _set("0.full", lambda a: np.array([object()] * len(a), dtype=object)),
        r"not a saved maskc IR file \(ValueError: Object arrays cannot be loaded",
    ),
}


def test_saved_file_loads_back(saved: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = saved
    loaded = maskc.CompiledPattern.load(path)
    assert loaded.n == 1000 and loaded.heads == 2 and len(loaded.layouts) == 2
    assert np.array_equal(loaded.to_dense(), maskc.compile(loaded.spec, block_size=(64, 32)).to_dense())


@pytest.mark.parametrize("case", list(TABLE_CHANGES))
def test_tampered_tables_are_refused(saved: tuple[Path, dict[str, np.ndarray]], case: str) -> None:
    path, tables = saved
    change, message = TABLE_CHANGES[case]
    with pytest.raises(IRFileError, match=message):
        maskc.CompiledPattern.load(_rewrite(tables, path, change))


def _at(raw: bytes, offset: int, replacement: bytes) -> bytes:
    return raw[:offset] + replacement + raw[offset + len(replacement) :]


@pytest.mark.parametrize(
    "damage",
    {
        "empty": lambda raw: b"",
        "truncated_half": lambda raw: raw[: len(raw) // 2],
        "truncated_tail": lambda raw: raw[:-20],
        "not_a_zip": lambda raw: b"name: not an npz\n",
        "garbage_inside": lambda raw: raw[:200] + bytes(200) + raw[400:],
        # the first member's compression method (central directory) set to one zipfile does not know
        "unknown_compression": lambda raw: _at(raw, raw.index(b"PK\x01\x02") + 10, b"\x63\x00"),
    }.items(),
    ids=lambda item: item[0],
)
def test_damaged_bytes_are_refused(saved: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, damage) -> None:
    path, _ = saved
    bad = tmp_path / "bad.npz"
    bad.write_bytes(damage[1](path.read_bytes()))
    with pytest.raises(IRFileError, match=r"bad\.npz: "):
        maskc.CompiledPattern.load(bad)


def test_missing_file_and_zip_bomb(tmp_path: Path) -> None:
    with pytest.raises(IRFileError, match="no such file"):
        maskc.CompiledPattern.load(tmp_path / "absent.npz")
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("header.npy", b"\0" * (1 << 20))
        info = archive.infolist()[0]
    assert info.file_size == 1 << 20
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(maskc.limits, "MAX_IR_FILE_BYTES", 1 << 19)
        with pytest.raises(IRFileError, match=r"maskc\.limits\.MAX_IR_FILE_BYTES"):
            maskc.CompiledPattern.load(bomb)


# ----------------------------------------------------------------------------- generated-kernel cache

#: Set-up shared by the cache cases, run in a fresh process with TRITON_INTERPRET=1 from the start
#: (Triton's interpreter must be chosen before anything imports it).
_CACHE_SETUP = """
import os, pathlib, torch, maskc
from maskc.backends.triton import cache
cache._MODULES.clear()  # each case starts as a fresh process would, with its own cache directory
cache._FALLBACK = None
spec = maskc.Spec(name="cache", seq_len=48, pattern=[maskc.Window(size=6), maskc.Global(tokens=[5])])
pattern = maskc.compile(spec, block_size=16)
gen = torch.Generator().manual_seed(1)
q, k, v = (torch.randn(1, 1, 48, 16, generator=gen) for _ in range(3))
want = maskc.attention(q.double(), k.double(), v.double(), pattern, backend="cpu")

def error():
    got = maskc.attention(q, k, v, pattern, backend="triton")
    return float((got.double() - want).abs().max())

def cache_file():
    (path,) = (pathlib.Path(os.environ["MASKC_CACHE_DIR"]) / "triton").glob("maskc_*.py")
    return path
"""

#: id → the damage done to the cached kernel file (`text`: its content; `marker`: a file the code must not create)
CACHE_DAMAGE = {
    "truncated": "text[: len(text) // 2]",
    "empty": "''",
    "edited_predicate": "text.replace('keep = (', 'keep = (q_idx >= 0) | (', 1)",
    "appended_code": 'text + f\'\\nopen({str(marker)!r}, "w").write("ran")\\n\'',
}


def _cache_case(damage: str) -> str:
    return (
        _CACHE_SETUP
        + "before = error()\npath = cache_file()\ntext = path.read_text()\n"
        + "marker = pathlib.Path(os.environ['MASKC_CACHE_DIR']) / 'marker'\n"
        + f"damaged = {CACHE_DAMAGE[damage]}\nassert damaged != text\npath.write_text(damaged)\n"
        + "cache._MODULES.clear()  # as a new process would start\n"
        + "after = error()\n"
        + "result = (before < 1e-4, after < 1e-4, marker.exists(), path.read_text() == text)\n"
    )


_BLOCKED_CACHE_DIR = (
    "import os, pathlib, warnings\nblocker = pathlib.Path(os.environ['MASKC_CACHE_DIR']) / 'not-a-directory'\n"
    "blocker.parent.mkdir(parents=True, exist_ok=True)\nblocker.write_text('')\n"
    "os.environ['MASKC_CACHE_DIR'] = str(blocker)\n"
    + _CACHE_SETUP
    + "with warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always')\n    err = error()\n"
    "result = (err < 1e-4, any('cannot use the kernel cache directory' in str(w.message) for w in caught),"
    " blocker.read_text() == '')\n"
)


@pytest.fixture(scope="module")
def cache_outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every cache case in one subprocess under TRITON_INTERPRET=1, each with its own cache directory."""
    tmp = tmp_path_factory.mktemp("kernel-cache")
    cases = [
        {"id": name, "python": f"import os\nos.environ['MASKC_CACHE_DIR'] = {str(tmp / name)!r}\n" + _cache_case(name)}
        for name in CACHE_DAMAGE
    ]
    cases.append(
        {
            "id": "blocked_dir",
            "python": f"import os\nos.environ['MASKC_CACHE_DIR'] = {str(tmp / 'blocked')!r}\n" + _BLOCKED_CACHE_DIR,
        }
    )
    batch = tmp / "cases.json"
    batch.write_text(json.dumps(cases))
    with batch.open() as stdin:
        run = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("hostile_runner.py")), str(8 << 30)],
            stdin=stdin,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "TRITON_INTERPRET": "1"},
            timeout=1200,
        )
    outcomes = {item["id"]: item for item in map(json.loads, run.stdout.splitlines())}
    outcomes["_stderr"] = {"text": run.stderr[-2000:]}
    return outcomes


def _result(outcomes: dict[str, dict], name: str) -> str:
    assert name in outcomes, outcomes["_stderr"]
    item = outcomes[name]
    assert item.get("raised") is None, item.get("trace")
    return item["result"]


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
def test_damaged_kernel_file_is_never_run(cache_outcomes: dict[str, dict], damage: str) -> None:
    """Correct before; after the damage, correct again, the appended code not run, the file restored."""
    assert _result(cache_outcomes, damage) == "(True, True, False, True)"


def test_cache_dir_that_is_a_file(cache_outcomes: dict[str, dict]) -> None:
    """MASKC_CACHE_DIR naming a file: correct output, one warning, the file untouched."""
    assert _result(cache_outcomes, "blocked_dir") == "(True, True, True)"
