"""maskc: a declarative sparse-attention mask compiler.

Declare a pattern from primitives, compile it to a block-sparse IR, prove that it connects
every token in L layers, and run it on a backend.
"""

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
