"""Generated kernel modules, cached in memory and on disk by the rules' structure key.

Triton's `@triton.jit` reads a kernel's source from its file, so generated source is written to
a file (atomically) under the cache directory and imported from there. The key is the rules'
structure, not n or parameter values, so a new sequence length reuses the module, and Triton's
own cache reuses the compiled binaries across processes. Modules loaded under TRITON_INTERPRET=1
are kept apart from compiled ones: the decorator chooses the interpreter when the module loads.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

#: Environment variable naming the directory of generated sources.
CACHE_DIR_ENV = "MASKC_CACHE_DIR"

_MODULES: dict[tuple[str, bool], ModuleType] = {}


def cache_dir() -> Path:
    """$MASKC_CACHE_DIR/triton, or ~/.cache/maskc/triton."""
    root = os.environ.get(CACHE_DIR_ENV)
    base = Path(root) if root else Path.home() / ".cache" / "maskc"
    return base / "triton"


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def load_module(key: str, source: Callable[[], str]) -> ModuleType:
    """The module for `key`, generating its source only when neither memory nor disk has it."""
    slot = (key, interpreting())
    module = _MODULES.get(slot)
    if module is None:
        path = _source_file(key, source)
        spec = importlib.util.spec_from_file_location(f"maskc_generated_{key}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[slot] = module
    return module


def _source_file(key: str, source: Callable[[], str]) -> Path:
    directory = cache_dir()
    path = directory / f"maskc_{key}.py"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        out.write(source())
    os.replace(temporary, path)
    return path
