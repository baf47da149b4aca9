"""Which catalogue pattern a spec is: judged by structure, with the mask overlap as one signal.

Two masks at one n say little about design: a causal window, a window with sinks and a dense
layer every eighth all look alike at n = 1024, and a Longformer with other widths overlaps an
axial pattern more than Longformer's own mask. So a spec is reduced to its `Shape`: the kinds of
its parts and their proportions (window width against n, how many global tokens, dilation,
causality), and its layer schedule (attention, dense and recurrent layers in order). The score
of a catalogue spec is a weighted sum of shape agreements, plus the Jaccard overlap of the masks
at one n where both are static; the reason says what the two share.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from maskc.catalogue import catalogue_specs
from maskc.compiler import compile
from maskc.errors import MaskcError, MaskcWarning
from maskc.ir import CompiledPattern
from maskc.primitives import PatternNode
from maskc.primitives.combinators import Combinator, Difference
from maskc.primitives.sizes import ExpressionError, evaluate
from maskc.spec import Spec

#: The n at which masks are compared for their overlap.
COMPARE_N = 1024

#: Weights of the signals in the score (they sum to 1).
WEIGHTS = {"kinds": 0.35, "proportions": 0.2, "causal": 0.1, "schedule": 0.15, "overlap": 0.2}
#: Kinds whose parts `describe` names, in the order it names them.
_PHRASES = {
    "window": "window",
    "block_local": "local blocks",
    "global": "global tokens",
    "sink": "sink tokens",
    "stride": "a stride",
    "random": "random blocks",
    "axial": "axial rows and columns",
    "cluster": "content clusters",
    "dense": "dense attention",
    "neighborhood": "a neighbourhood on a grid (NATTEN)",
    "tiles": "sliding tiles on a grid (STA)",
}


class Recognition(NamedTuple):
    """A catalogue spec a pattern resembles: its name, a score in [0, 1], and why."""

    name: str
    score: float
    reason: str


@dataclass
class Shape:
    """What a spec is made of, in proportions that do not depend on n."""

    causal: bool
    #: Kind → share of attention layers (and heads) whose pattern has a part of that kind.
    kinds: dict[str, float] = field(default_factory=dict)
    #: Window widths (keys per query) over n, and whether each window is symmetric.
    windows: list[tuple[float, bool]] = field(default_factory=list)
    dilated: bool = False
    #: Global or sink tokens per head pattern (explicit lists and `first`); periodic sets count apart.
    hub_tokens: list[int] = field(default_factory=list)
    periodic_globals: bool = False
    #: One schedule cycle, a label per layer: "recurrent", "identity", "dense" or "sparse".
    schedule: tuple[str, ...] = ("sparse",)
    per_head: bool = False


# ----------------------------------------------------------------------------- shapes


def _leaves(node: PatternNode) -> Iterator[PatternNode]:
    """The primitives that light cells: a difference's subtracted side does not."""
    if isinstance(node, Difference):
        yield from _leaves(node.of[0])
    elif isinstance(node, Combinator):
        for child in node.of:
            yield from _leaves(child)
    else:
        yield node


def _value(value: int | str | None, n: int, default: int = 0) -> int:
    if value is None:
        return default
    try:
        return evaluate(value, n)
    except ExpressionError:
        return default


def _add_leaf(shape: Shape, leaf: PatternNode, n: int, block: int, causal: bool) -> None:
    params = dict(leaf)
    if leaf.kind == "window":
        unit = block if params["granularity"] == "block" else 1
        if params["size"] is not None:
            before = after = _value(params["size"], n) // 2
        else:
            before, after = _value(params["before"], n), _value(params["after"], n)
        if causal:
            after = 0
        shape.windows.append(((before + after + 1) * unit / n, before == after))
        shape.dilated |= _value(params["dilation"], n, 1) > 1
    elif leaf.kind == "global":
        if params["every"] is not None:
            shape.periodic_globals = True
        else:
            shape.hub_tokens.append(len(params["tokens"]) if params["tokens"] else _value(params["first"], n))
    elif leaf.kind == "sink":
        shape.hub_tokens.append(_value(params["count"], n))


def _layer_label(node: PatternNode, mixer: str) -> str:
    if mixer != "attention":
        return mixer
    return "dense" if node.kind == "dense" else "sparse"


def shape_of(spec: Spec, n: int | None = None) -> Shape:
    """The shape of a spec at n (default: its own seq_len, else 4096)."""
    n = n or spec.seq_len or 4096
    shape = Shape(causal=spec.causal, per_head=bool(spec.head_patterns))
    labels: list[str] = []
    patterns = 0
    for (count, layer), mixer in zip(spec.layer_schedule(), spec.layer_mixers()):
        nodes = [layer.pattern, *(entry.pattern for entry in layer.head_patterns)]
        labels += [_layer_label(layer.pattern, mixer)] * count
        if mixer != "attention":
            continue
        for node in nodes:
            patterns += count
            kinds = {leaf.kind for leaf in _leaves(node)}
            for kind in kinds:
                shape.kinds[kind] = shape.kinds.get(kind, 0) + count
            for leaf in _leaves(node):
                _add_leaf(shape, leaf, n, spec.block_size, spec.causal)
    shape.kinds = {kind: uses / max(patterns, 1) for kind, uses in shape.kinds.items()}
    shape.schedule = tuple(labels) if spec.layers else ("sparse",)
    return shape


def describe(shape: Shape) -> str:
    """The shape in words: "a symmetric window + a few global tokens"."""
    parts = []
    for kind, phrase in _PHRASES.items():
        if kind not in shape.kinds:
            continue
        if kind == "window":
            symmetric = all(sym for _, sym in shape.windows)
            phrase = ("a dilated " if shape.dilated else "a ") + (
                "causal window" if shape.causal else ("symmetric window" if symmetric else "one-sided window")
            )
        elif kind in ("global", "sink") and shape.hub_tokens and not (kind == "global" and shape.periodic_globals):
            phrase = ("a few " if max(shape.hub_tokens) <= 16 else "") + phrase
        elif kind == "global" and shape.periodic_globals:
            phrase = "periodic global columns"
        parts.append(phrase)
    recurrent = shape.schedule.count("recurrent")
    if recurrent:
        layers = len(shape.schedule) - recurrent - shape.schedule.count("identity")
        parts.append(
            f"{layers} attention layer{'s' if layers != 1 else ''} per {len(shape.schedule)}, the rest recurrent"
        )
    elif len(set(shape.schedule)) > 1:
        parts.append("a per-layer schedule")
    if shape.per_head:
        parts.append("parts split over heads")
    text = " + ".join(parts) or "nothing"
    return f"causal: {text}" if shape.causal and "causal window" not in text else text


# ----------------------------------------------------------------------------- agreement


def _closeness(a: float, b: float, scale: float = 2.0) -> float:
    """1 when equal, falling with the ratio's log: a factor of 2 gives exp(−1/scale)."""
    if a <= 0 or b <= 0:
        return 1.0 if a == b else 0.0
    return math.exp(-abs(math.log2(a / b)) / scale)


def _kinds_agreement(a: Shape, b: Shape) -> float:
    """Weighted Jaccard of the kinds and the share of layers and heads that use them, smoothed by
    half a kind so that, with nothing in common, more parts that differ read as further apart."""
    kinds = set(a.kinds) | set(b.kinds)
    top = sum(min(a.kinds.get(k, 0), b.kinds.get(k, 0)) for k in kinds)
    bottom = sum(max(a.kinds.get(k, 0), b.kinds.get(k, 0)) for k in kinds)
    return (top + 0.5) / (bottom + 0.5)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _proportions_agreement(a: Shape, b: Shape) -> float:
    """How alike the shared parts are: window widths and symmetry, dilation, hub token counts."""
    terms = []
    if a.windows and b.windows:
        width = _closeness(_mean([w for w, _ in a.windows]), _mean([w for w, _ in b.windows]))
        same_side = all(s for _, s in a.windows) == all(s for _, s in b.windows)
        terms.append(width * (1.0 if same_side else 0.5) * (1.0 if a.dilated == b.dilated else 0.75))
    if a.hub_tokens and b.hub_tokens:
        terms.append(_closeness(_mean(a.hub_tokens), _mean(b.hub_tokens)))
    if ("global" in a.kinds) and ("global" in b.kinds):
        terms.append(1.0 if a.periodic_globals == b.periodic_globals else 0.5)
    return _mean(terms) if terms else _kinds_agreement(a, b)


def _first_attention(schedule: tuple[str, ...]) -> float:
    """Where in its cycle a schedule first attends, as a fraction of the cycle (1 when never)."""
    first = next((k for k, label in enumerate(schedule) if label in ("dense", "sparse")), len(schedule))
    return first / len(schedule)


def _schedule_agreement(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """Equal parts: the overlap of label shares, the agreement layer by layer over a common period,
    and how close the first attention layer sits in the cycle."""
    labels = set(a) | set(b)
    shares = 1 - 0.5 * sum(abs(a.count(x) / len(a) - b.count(x) / len(b)) for x in labels)
    first = 1 - abs(_first_attention(a) - _first_attention(b))
    period = math.lcm(len(a), len(b))
    if period > 4096:
        return (shares + first) / 2
    aligned = sum(a[k % len(a)] == b[k % len(b)] for k in range(period)) / period
    return (shares + aligned + first) / 3


def _reason(name: str, mine: Shape, theirs: Shape, overlap: float | None) -> str:
    shared = sorted(set(mine.kinds) & set(theirs.kinds))
    extra = sorted(set(mine.kinds) - set(theirs.kinds))
    missing = sorted(set(theirs.kinds) - set(mine.kinds))
    notes = []
    if mine.windows and theirs.windows:
        here, there = _mean([w for w, _ in mine.windows]), _mean([w for w, _ in theirs.windows])
        notes.append(f"window {here:.3g}·n here, {there:.3g}·n there")
    if mine.hub_tokens and theirs.hub_tokens:
        notes.append(f"hub tokens {round(_mean(mine.hub_tokens))} here, {round(_mean(theirs.hub_tokens))} there")
    if not shared:
        notes.append("no kind of part in common")
    if extra:
        notes.append(f"only here: {', '.join(extra)}")
    if missing:
        notes.append(f"only there: {', '.join(missing)}")
    if mine.causal != theirs.causal:
        notes.append(f"{'causal' if theirs.causal else 'bidirectional'} there")
    if overlap is not None:
        notes.append(f"mask overlap {overlap:.2f}")
    return f"{name}: {describe(theirs)} ({'; '.join(notes)})" if notes else f"{name}: {describe(theirs)}"


def resemblance(mine: Shape, theirs: Shape, overlap: float | None) -> float:
    """The score in [0, 1]; without an overlap (a run-time mask) the other signals share its weight."""
    signals = {
        "kinds": _kinds_agreement(mine, theirs),
        "proportions": _proportions_agreement(mine, theirs),
        "causal": float(mine.causal == theirs.causal),
        "schedule": _schedule_agreement(mine.schedule, theirs.schedule),
    }
    if overlap is not None:
        signals["overlap"] = overlap
    total = sum(WEIGHTS[k] for k in signals)
    return float(sum(WEIGHTS[k] * v for k, v in signals.items()) / total)


# ----------------------------------------------------------------------------- masks


def union_mask(pattern: CompiledPattern) -> np.ndarray:
    """The (n, n) mask of a compiled pattern, union over heads: one mask per distinct pattern the
    heads use, never one per head (65,536 heads would need 64 GiB at n = 1024), each OR-ed into one
    (n, n) result as it is made (thousands of distinct patterns stay one mask, not a stack)."""
    used = np.unique(pattern.head_layout) if pattern.per_head else [0]
    union = pattern.layouts[int(used[0])].to_dense().copy()  # never a cached array
    for k in used[1:]:
        union |= pattern.layouts[int(k)].to_dense()
    return union


def mask_overlaps(spec: Spec, others: list[tuple[Path, Spec]]) -> tuple[dict[str, float], list[str]]:
    """Jaccard overlap of the masks at COMPARE_N (union over heads) per catalogue name, and those not compared."""
    if spec.is_dynamic():
        return {}, ["all (this mask is decided at run time)"]
    if spec.grid is not None:
        return {}, ["all (a grid fixes its own n)"]
    mine = union_mask(compile(spec, seq_len=COMPARE_N))
    overlaps, skipped = {}, []
    for path, other in others:
        if other.is_dynamic():
            skipped.append(f"{path.stem} (run time)")
            continue
        try:
            with warnings.catch_warnings():  # a catalogue spec's own warnings are not the user's business here
                warnings.simplefilter("ignore", MaskcWarning)
                theirs = union_mask(compile(other, seq_len=COMPARE_N))
        except MaskcError:
            skipped.append(f"{path.stem} (does not compile at n = {COMPARE_N})")
            continue
        union = np.count_nonzero(mine | theirs)
        overlaps[path.stem] = float(np.count_nonzero(mine & theirs) / union) if union else 1.0
    return overlaps, skipped


def _catalogue_without(source: Path | None) -> list[tuple[Path, Spec]]:
    specs = catalogue_specs()
    if source is None:
        return specs
    return [(path, other) for path, other in specs if path.resolve() != Path(source).resolve()]


def rank(
    spec: Spec, n: int | None = None, source: Path | None = None, overlap: bool = True
) -> tuple[list[Recognition], list[str]]:
    """Catalogue specs by resemblance to `spec`, best first, and the masks that could not be compared.

    `source`, the spec's own file, is left out of the catalogue; `overlap=False` skips the masks
    (structure only, no compiling).
    """
    others = _catalogue_without(source)
    overlaps, skipped = mask_overlaps(spec, others) if overlap else ({}, [])
    mine = shape_of(spec, n)
    out = []
    for path, other in others:
        theirs = shape_of(other)
        shared = overlaps.get(path.stem)
        out.append(Recognition(path.stem, resemblance(mine, theirs, shared), _reason(path.stem, mine, theirs, shared)))
    out.sort(key=lambda r: (-r.score, r.name))
    return out, skipped


def recognise(spec: Spec, n: int | None = None, source: Path | None = None, overlap: bool = True) -> Recognition | None:
    """The catalogue spec this one most resembles: (name, score, reason); None with an empty catalogue."""
    ranked, _ = rank(spec, n, source, overlap)
    return ranked[0] if ranked else None
