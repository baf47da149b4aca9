"""The attention kernels as Triton code: `forward` (and on Hopper `forward_ws`, in Gluon), `backward`
(dK/dV, dQ; on Hopper `backward_ws`, both in Gluon), `decode` and the passes' `merge`,
with `common` helpers; for cluster patterns `nearest` (their labels) and `rows` (their row
permutations); for run-time layouts `select` (top-k blocks) and `compact` (tile tables from tile
kinds).

The kernels are the same for every pattern. What a pattern changes is the predicate `tile_mask`,
generated from its rules (`codegen.py`), which every kernel takes as a `tl.constexpr` argument,
with the predicate's arguments as one tuple (`mask_args`): Triton specialises each kernel on the
predicate and on the tuple's constexpr elements, so the compiled code is that of the predicate
written into the kernel.

Triton picks its interpreter or its compiler when `@triton.jit` decorates a function (from
TRITON_INTERPRET). A process may run both (the test suite does), so these modules are loaded once
per mode, each time as a package of its own (`kernel_module`); their own imports are relative, so
each copy calls its own helpers.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path
from types import ModuleType

#: The kernel modules; their source is part of the generated predicate's key.
MODULES = (
    "common",
    "forward",
    "forward_ws",
    "backward",
    "backward_ws",
    "decode",
    "merge",
    "nearest",
    "rows",
    "select",
    "compact",
)
_HERE = Path(__file__).parent


def kernel_module(name: str, interpret: bool) -> ModuleType:
    """Kernel module `name` (one of MODULES) decorated for the interpreter or the compiler."""
    loaded = _LOADED.get((name, interpret))
    if loaded is not None:  # a dictionary lookup: every launch asks, and an import costs microseconds
        return loaded
    if name not in MODULES:
        raise ValueError(f"no kernel module {name!r}; the modules are {', '.join(MODULES)}")
    package = f"maskc_kernels_{'interpreted' if interpret else 'compiled'}"
    if package not in sys.modules:
        module = ModuleType(package, __doc__)
        module.__path__ = [str(_HERE)]
        sys.modules[package] = module
    _LOADED[name, interpret] = importlib.import_module(f"{package}.{name}")
    return _LOADED[name, interpret]


_LOADED: dict[tuple[str, bool], ModuleType] = {}


def source_digest() -> str:
    """A hash of the kernel modules' source: a change in any of them changes every generated key."""
    digest = hashlib.sha256()
    for name in MODULES:
        digest.update((_HERE / f"{name}.py").read_bytes())
    return digest.hexdigest()
