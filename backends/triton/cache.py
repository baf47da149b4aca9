"""Generated kernel modules, cached in memory and on disk by the rules' structure key.

Triton's `@triton.jit` reads a kernel's source from its file, so generated source is written to
a file (atomically) under the cache directory and imported from there. The file's name carries
a hash of its content, and its bytes are compared with the freshly generated source before it is
imported, so a damaged or edited file is rewritten, never run. The key is the rules'
structure, not n or parameter values, so a new sequence length reuses the module, and Triton's
own cache reuses the compiled binaries across processes. Modules loaded under TRITON_INTERPRET=1
are kept apart from compiled ones: the decorator chooses the interpreter when the module loads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from maskc.errors import MaskcWarning

#: Environment variable naming the directory of generated sources.
CACHE_DIR_ENV = "MASKC_CACHE_DIR"

_MODULES: dict[tuple[str, bool], ModuleType] = {}
#: Where generated sources go when the cache directory cannot be used (set on first failure).
_FALLBACK: Path | None = None


def cache_dir() -> Path:
    """$MASKC_CACHE_DIR/triton, or ~/.cache/maskc/triton."""
    root = os.environ.get(CACHE_DIR_ENV)
    base = Path(root) if root else Path.home() / ".cache" / "maskc"
    return base / "triton"


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def load_module(key: str, source: Callable[[], str]) -> ModuleType:
    """The module for `key`: generated, then imported from a cache file whose content is checked first."""
    slot = (key, interpreting())
    module = _MODULES.get(slot)
    if module is None:
        text = source()
        path = _source_file(key, text)
        spec = importlib.util.spec_from_file_location(f"maskc_generated_{key}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[slot] = module
    return module


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _source_file(key: str, text: str) -> Path:
    """A file holding exactly `text`, named by the key and the hash of its content.

    A cached file is imported only when its bytes are the generated source (a truncated,
    edited or extended file is replaced, never executed); writes go through a temporary file
    and os.replace, so a reader never sees half a file.
    """
    directory = _usable_dir()
    path = directory / f"maskc_{key}_{_digest(text)}.py"
    try:
        if path.read_bytes() == text.encode("utf-8"):
            return path
    except OSError:
        pass
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _usable_dir() -> Path:
    """The cache directory, or (once, with a warning) a private temporary one when it cannot be used."""
    global _FALLBACK
    if _FALLBACK is not None:
        return _FALLBACK
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"{directory} is not writable")
        return directory
    except OSError as err:
        _FALLBACK = Path(tempfile.mkdtemp(prefix="maskc-triton-"))
        warnings.warn(
            f"cannot use the kernel cache directory {directory} ({err}); set {CACHE_DIR_ENV} to a writable "
            f"directory. Generated kernels go to {_FALLBACK} for this process",
            MaskcWarning,
            stacklevel=4,
        )
        return _FALLBACK
