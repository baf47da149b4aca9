"""The architecture as a test: imports point down the layers and no package has an import cycle.

The contracts live in pyproject.toml ([tool.importlinter]); import-linter checks them on the
source files without importing maskc. `backends/` is installed as `maskc.backends` but analysed
as the top-level package `backends`, so its absolute imports must not spell `maskc.backends`
(they would escape the analysis); the last test keeps that true.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
    from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent

#: maskc runs on Python 3.10, but import-linter (2.17, pinned in constraints-cpu.txt) and tomllib need
#: 3.11: the test extra installs import-linter from 3.11 on, and on 3.10 these checks skip, saying why.
NEEDS_PYTHON_311 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="import-linter 2.17 and tomllib need Python 3.11; maskc itself runs on 3.10"
)


@NEEDS_PYTHON_311
def test_import_contracts_hold(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", [str(ROOT), *sys.path])
    exit_code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert exit_code == 0, report
    assert "0 broken" in report


def _absolute_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("folder", ["maskc", "backends"])
def test_no_static_import_of_maskc_backends(folder: str) -> None:
    """maskc imports backends only through the registry (by name); backends import each other relatively."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, name in _absolute_imports(path)
        if name == "maskc.backends" or name.startswith("maskc.backends.")
    ]
    assert not offenders, "\n".join(offenders)


def test_optional_extras_are_not_imported_by_maskc() -> None:
    """`import maskc` works without the optional extras: transformers and selenium load only on use."""
    import subprocess

    probe = "import sys, maskc; print(sorted(m for m in ('transformers', 'selenium') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _layout_table() -> list[str]:
    """The first cells of the README's "Layout of the repository" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout of the repository", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [row.split("|")[1].strip() for row in rows]


def test_readme_layout_table_names_every_module_once() -> None:
    """Each package and top-level module of maskc, and each top folder, has one row; no row is repeated."""
    cells = _layout_table()
    assert len(cells) == len(set(cells)), sorted(c for c in cells if cells.count(c) > 1)
    named = " ".join(cells)
    wanted = [f"`maskc/{p.name}`" for p in sorted((ROOT / "maskc").glob("*.py")) if not p.name.startswith("__")]
    wanted += [f"`maskc/{p.name}/`" for p in sorted((ROOT / "maskc").iterdir()) if (p / "__init__.py").exists()]
    wanted += [f"`{folder}/`" for folder in ("backends", "specs", "tests", "bench", "docs")]
    assert not [w for w in wanted if w not in named], [w for w in wanted if w not in named]


@NEEDS_PYTHON_311
def test_every_module_of_maskc_is_in_a_layer() -> None:
    """A module outside the layers contract could import upwards unseen: each one has its layer."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    layered = {name.strip() for layer in contract["layers"] for name in re.split(r"[:|]", layer)}
    modules = [f"maskc.{p.stem}" for p in (ROOT / "maskc").glob("*.py") if p.name != "__init__.py"]
    modules += [f"maskc.{p.name}" for p in (ROOT / "maskc").iterdir() if (p / "__init__.py").exists()]
    modules += [f"maskc.ir.{p.stem}" for p in (ROOT / "maskc" / "ir").glob("*.py") if p.name != "__init__.py"]
    # maskc.ir's own __init__ only re-exports maskc.ir.record; its modules have layers of their own.
    missing = sorted(m for m in modules if m not in layered and m != "maskc.ir")
    assert not missing, missing
