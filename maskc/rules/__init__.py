"""The rule layer: element predicates over (query, key) with exact tile classes.

Primitives (`maskc.primitives`) lower to these rules; layouts, analyses and backends read
them. Rules know nothing of specs or of any backend.
"""

from maskc.origin import Origin
from maskc.rules.band import BandRule
from maskc.rules.base import (
    EmptyRule,
    Rule,
    TileClass,
    combine_keys,
    evaluate_tiles,
    resolve_tiles,
    tile_classes,
    uniform_tiles_alike,
)
from maskc.rules.canvas import Box, Canvas
from maskc.rules.combinators import CombinatorRule, DifferenceRule, IntersectRule, UnionRule, intersect_rules
from maskc.rules.deferred import DeferredRule
from maskc.rules.documents import (
    DocumentRule,
    DocumentTokens,
    PerDocumentRule,
    SameDocumentRule,
    dense_labels,
    document_ranks,
    per_document_rule,
)
from maskc.rules.grid import AxisWindow, GridWindowRule, natten_axis, sta_axis
from maskc.rules.labels import ClusterParams, ClusterRule, LabelRule
from maskc.rules.random import RandomRule, draw_distinct
from maskc.rules.rewrite import rewrite
from maskc.rules.simplify import layout_rule
from maskc.rules.tokens import TokenSet, TokenSetRule
from maskc.rules.topk import SelectedBlocksRule, TopkParams, TopkRule

__all__ = [
    "AxisWindow",
    "BandRule",
    "Box",
    "Canvas",
    "ClusterParams",
    "ClusterRule",
    "CombinatorRule",
    "DeferredRule",
    "DifferenceRule",
    "DocumentRule",
    "DocumentTokens",
    "EmptyRule",
    "GridWindowRule",
    "IntersectRule",
    "LabelRule",
    "Origin",
    "PerDocumentRule",
    "RandomRule",
    "Rule",
    "SameDocumentRule",
    "SelectedBlocksRule",
    "TileClass",
    "TokenSet",
    "TokenSetRule",
    "TopkParams",
    "TopkRule",
    "UnionRule",
    "combine_keys",
    "dense_labels",
    "document_ranks",
    "draw_distinct",
    "evaluate_tiles",
    "intersect_rules",
    "layout_rule",
    "natten_axis",
    "per_document_rule",
    "resolve_tiles",
    "rewrite",
    "sta_axis",
    "tile_classes",
    "uniform_tiles_alike",
]
