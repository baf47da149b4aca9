"""Pattern primitives and combinators: one module each, registered by kind name."""

from maskc.primitives.axial import Axial
from maskc.primitives.base import PATTERN_TYPES, LowerContext, PatternNode, Primitive, parse_pattern, register
from maskc.primitives.block_local import BlockLocal
from maskc.primitives.cluster import Cluster
from maskc.primitives.combinators import Difference, Intersect, Union
from maskc.primitives.dense import Dense
from maskc.primitives.document import Document
from maskc.primitives.global_ import Global
from maskc.primitives.neighborhood import Neighborhood, Tiles
from maskc.primitives.random import Random
from maskc.primitives.sink import Sink
from maskc.primitives.stride import Stride
from maskc.primitives.topk import Topk
from maskc.primitives.window import Window

__all__ = [
    "PATTERN_TYPES",
    "Axial",
    "BlockLocal",
    "Cluster",
    "Dense",
    "Difference",
    "Document",
    "Global",
    "Intersect",
    "LowerContext",
    "Neighborhood",
    "PatternNode",
    "Primitive",
    "Random",
    "Sink",
    "Stride",
    "Tiles",
    "Topk",
    "Union",
    "Window",
    "parse_pattern",
    "register",
]
