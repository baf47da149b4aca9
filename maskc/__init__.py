"""maskc: a declarative sparse-attention mask compiler.

Declare a pattern from primitives, compile it to a block-sparse IR, prove that it connects
every token in L layers, and run it on a backend.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as static tools see them; at run time they load on first use (below)
    from maskc import hf, nn
    from maskc.attention import attention
    from maskc.canvas import Grid
    from maskc.compiler import compile, compile_layers
    from maskc.documents import ids_from_lengths
    from maskc.errors import (
        ArgumentError,
        BackendError,
        DocumentsError,
        DynamicPatternError,
        IRFileError,
        MaskcError,
        MaskcWarning,
        SpecError,
        TooLargeError,
    )
    from maskc.ir import BlockLayout, CompiledPattern
    from maskc.kvcache import KVCache
    from maskc.loader import load, parse_spec
    from maskc.primitives import (
        Axial,
        BlockLocal,
        Cluster,
        Dense,
        Difference,
        Document,
        Global,
        Intersect,
        Neighborhood,
        Random,
        Sink,
        Stride,
        Tiles,
        Topk,
        Union,
        Window,
    )
    from maskc.recognise import Recognition, recognise
    from maskc.registry import available_backends, register_backend
    from maskc.retention import Retention, kv_cache_tokens, kv_retention, pattern_retention
    from maskc.spec import HeadPattern, LayerEntry, Spec
    from maskc.verify import Report, verify

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "Axial",
    "BackendError",
    "BlockLayout",
    "BlockLocal",
    "Cluster",
    "CompiledPattern",
    "Dense",
    "Difference",
    "Document",
    "DocumentsError",
    "DynamicPatternError",
    "Global",
    "Grid",
    "HeadPattern",
    "IRFileError",
    "Intersect",
    "KVCache",
    "LayerEntry",
    "MaskcError",
    "MaskcWarning",
    "Neighborhood",
    "Random",
    "Recognition",
    "Report",
    "Retention",
    "Sink",
    "Spec",
    "SpecError",
    "Stride",
    "Tiles",
    "TooLargeError",
    "Topk",
    "Union",
    "Window",
    "attention",
    "available_backends",
    "compile",
    "compile_layers",
    "hf",
    "ids_from_lengths",
    "kv_cache_tokens",
    "kv_retention",
    "load",
    "nn",
    "parse_spec",
    "pattern_retention",
    "recognise",
    "register_backend",
    "verify",
]

#: Where each public name lives. They are imported on first use (PEP 562), so that `import maskc`
#: and the `maskc` command do not pay for torch, scipy or Triton until a name that needs them is used.
_EXPORTS = {
    "maskc.attention": "attention",
    "maskc.canvas": "Grid",
    "maskc.compiler": "compile compile_layers",
    "maskc.documents": "ids_from_lengths",
    "maskc.errors": "ArgumentError BackendError DocumentsError DynamicPatternError IRFileError MaskcError "
    "MaskcWarning SpecError TooLargeError",
    "maskc.ir": "BlockLayout CompiledPattern",
    "maskc.kvcache": "KVCache",
    "maskc.loader": "load parse_spec",
    "maskc.primitives": "Axial BlockLocal Cluster Dense Difference Document Global Intersect Neighborhood Random "
    "Sink Stride Tiles Topk Union Window",
    "maskc.recognise": "Recognition recognise",
    "maskc.registry": "available_backends register_backend",
    "maskc.retention": "Retention kv_cache_tokens kv_retention pattern_retention",
    "maskc.spec": "HeadPattern LayerEntry Spec",
    "maskc.verify": "Report verify",
}
#: Public names that are modules themselves.
_SUBMODULES = ("hf", "nn")
_HOME = {name: f"maskc.{name}" for name in _SUBMODULES} | {
    name: module for module, names in _EXPORTS.items() for name in names.split()
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        # a submodule by its name (`maskc.limits`, `maskc.schedule`), as the eager imports once gave
        if name.isidentifier() and not name.startswith("_") and importlib.util.find_spec(f"maskc.{name}"):
            return importlib.import_module(f"maskc.{name}")
        raise AttributeError(f"module 'maskc' has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if name in _SUBMODULES else getattr(module, name)
    setattr(sys.modules[__name__], name, value)
    return value


def __dir__() -> list[str]:
    """The public names and the submodules loaded so far (not this module's own imports)."""
    loaded = {key for key, value in globals().items() if isinstance(value, ModuleType) and value.__name__ != key}
    return sorted(set(__all__) | loaded)


class _Package(ModuleType):
    """The package module: a function named like the module that holds it (`maskc.attention`,
    `maskc.verify`, `maskc.recognise`) stays the function when that module is imported, as the
    import system then sets the package attribute to the module."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, ModuleType) and name not in _SUBMODULES and _HOME.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
