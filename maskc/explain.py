"""What a spec is made of, how it scales, which catalogue pattern it resembles, and what to watch for.

Every figure is computed on the IR: densities from exact element counts, the complexity class from
how active pairs grow between n and 2n, similarity from the masks at one common n, and the warnings
from exact checks (`maskc.verify` for reach, layouts for residue classes and empty rows).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maskc.catalogue import Densities, attention_entries, schedule_densities, schedule_depth
from maskc.compiler import compile, compile_layers
from maskc.draw import Panel, spec_panels
from maskc.errors import MaskcWarning, SpecError
from maskc.ir.build import build_layout
from maskc.origin import named
from maskc.recognise import COMPARE_N, Recognition, rank
from maskc.retention import Retention, kv_retention
from maskc.rules import BandRule, DifferenceRule, GridWindowRule, Rule
from maskc.schedule import schedule_of, schedule_reasons
from maskc.spec import Spec
from maskc.text import format_ranges
from maskc.verify import verify

#: What the grid rules are called in the literature.
FAMILIES = {
    "neighborhood": "NATTEN neighbourhood attention (Hassani et al., 2023)",
    "tiles": "sliding-tile attention, STA (Zhang et al., 2025)",
}
#: Growth exponents below these bounds read as O(n) and O(n·√n); above, O(n²).
_LINEAR_BELOW, _SQRT_BELOW = 1.25, 1.75


@dataclass(frozen=True)
class Growth:
    """Active pairs at n and 2n, and the exponent e with pairs ∝ n^e between them."""

    n: int
    pairs: float
    pairs_doubled: float
    #: The n compared with: 2n, or for a grid, the n of the grid with its first axis doubled.
    n_doubled: int = 0

    @property
    def exponent(self) -> float:
        if not self.pairs:
            return float("nan")
        return math.log2(self.pairs_doubled / self.pairs) / math.log2((self.n_doubled or 2 * self.n) / self.n)

    @property
    def complexity(self) -> str:
        e = self.exponent
        return "O(n)" if e < _LINEAR_BELOW else ("O(n·√n)" if e < _SQRT_BELOW else "O(n²)")


@dataclass
class Explanation:
    spec: Spec
    n: int
    depth: int | None
    parts: list[tuple[str, list[str]]]
    densities: Densities
    growth: Growth | None
    similar: list[Recognition]
    skipped: list[str]
    min_layers: int | None
    warnings: list[str] = field(default_factory=list)
    #: Per layer of one schedule cycle, the keys decoding keeps (maskc.retention).
    kv_cache: list[Retention] = field(default_factory=list)
    #: Well-known families the pattern contains (NATTEN, STA), one line each.
    families: list[str] = field(default_factory=list)
    #: Why the kernels run the passes they run (`maskc.schedule`).
    schedule: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        spec = self.spec
        shape = "causal" if spec.causal else "bidirectional"
        depth = f", depth {self.depth} layers" if self.depth else ""
        out = [f"{spec.name}: {spec.description}" if spec.description else spec.name]
        out.append(f"n = {self.n}, {shape}, {spec.heads or 1} head(s){depth}")
        out += ["", "made of"]
        for title, leaves in self.parts:
            out.append(f"  {title}:")
            out += [f"    {leaf}" for leaf in leaves]
        if self.families:
            out += ["", "recognised", *(f"  {line}" for line in self.families)]
        out += ["", *self._measures(), "", *self._closest()]
        if self.schedule:
            out += ["", "schedule", *(f"  {line}" for line in self.schedule)]
        out += ["", "warnings"]
        out += [f"  - {w}" for w in self.warnings] or ["  none"]
        return out

    def _measures(self) -> list[str]:
        d = self.densities
        if d.element is None:
            density = "density      decided at run time (cluster assignments, top-k selections or documents)"
        elif d.element == 0:
            density = (
                "density      no (i, j) pair is active: no attention FLOPs (an empty pattern, or no attention layer)"
            )
        else:
            density = (
                f"density      {d.element:.3%} of (i, j) pairs active: attention FLOPs 1/{1 / d.element:,.1f} of "
                f"dense; a block-sparse kernel computes {d.tile:.2%} (stored tiles)"
            )
        if self.growth is None and not self.spec.is_dynamic():
            growth = f"complexity   not estimated: the spec does not hold at twice n = {self.n}"
        elif self.growth is not None and not self.growth.pairs:
            growth = f"complexity   none: no active pairs at n = {self.n} to grow"
        elif self.growth is None:
            growth = (
                "complexity   decided at run time (n²/c pairs for c balanced clusters, n·k·B for top-k blocks, "
                "Σ lengths² for documents)"
            )
        else:
            g = self.growth
            held = (
                "the grid's first axis doubled, kernels and tiles fixed"
                if self.spec.grid
                else "sizes written in n follow it, the others stay fixed"
            )
            growth = (
                f"complexity   {g.complexity}: active pairs grow ×{g.pairs_doubled / g.pairs:.2f} from n = {g.n} to "
                f"{g.n_doubled} (pairs ∝ n^{g.exponent:.2f}; {held})"
            )
        reach = "never (no depth connects every pair)" if self.min_layers is None else str(self.min_layers)
        static = " (static part: run-time edges left out)" if self.spec.is_dynamic() else ""
        return [density, growth, f"min_layers   {reach} at n = {self.n}{static}", *self._kv_cache()]

    def _kv_cache(self) -> list[str]:
        """ "KV cache at decode: …" per run of layers that keep the same keys."""
        runs: list[tuple[int, int, Retention]] = []
        for index, retention in enumerate(self.kv_cache):
            if runs and runs[-1][2] == retention:
                runs[-1] = (runs[-1][0], index, retention)
            else:
                runs.append((index, index, retention))
        if len(runs) == 1:
            return [f"KV cache     at decode: {runs[0][2].describe(per=' per layer')}"]
        lines = []
        for first, last, retention in runs:
            layers = f"layer {first + 1}" if first == last else f"layers {first + 1}–{last + 1}"
            title = "KV cache     at decode: " if not lines else " " * len("KV cache     at decode: ")
            lines.append(f"{title}{layers}: {retention.describe()}")
        return lines

    def to_json(self) -> dict:
        """The figures of the explanation as JSON-ready values."""
        d = self.densities
        return {
            "spec": self.spec.name,
            "seq_len": self.n,
            "depth": self.depth,
            "density": d.element,
            "tile_density": d.tile,
            "min_layers": self.min_layers,
            "kv_cache_tokens": [retention.tokens() for retention in self.kv_cache],
            "warnings": self.warnings,
        }

    def _closest(self) -> list[str]:
        if not self.similar:
            return ["closest      no catalogue pattern to compare with"]
        best, *rest = self.similar
        out = [f"closest      {best.name} ({best.score:.2f}) — {best.reason}"]
        if rest:
            out.append(f"             then {', '.join(f'{r.name} ({r.score:.2f})' for r in rest)}")
        out.append(
            "             scored by structure (kinds and proportions of the parts, causality, layer schedule)"
            f" and the masks' overlap at n = {COMPARE_N}"
        )
        if self.skipped:
            out.append(f"             masks not compared: {', '.join(self.skipped)}")
        return out


# ----------------------------------------------------------------------------- parts


def _flow(data: object) -> str:
    return yaml.safe_dump(data, default_flow_style=True, sort_keys=False, width=1 << 16).strip()


def describe_parts(spec: Spec, n: int, documents: Any = None, seed: int | None = None) -> list[tuple[str, list[str]]]:
    """Per distinct pattern (over heads and layers): its spec form and the element rule it lowers to."""
    return [
        (panel.title, [_panel_form(panel), f"rule: {panel.layout.rule.describe()}"])
        for panel in spec_panels(spec, n, documents=documents, seed=seed)
    ]


def _panel_form(panel: Panel) -> str:
    """The spec form of a panel: its pattern, or its mixer for a layer without attention."""
    return _flow(panel.root.to_data()) if panel.mixer == "attention" else _flow({"mixer": panel.mixer})


# ----------------------------------------------------------------------------- measures


def _active_pairs(spec: Spec, n: int) -> float:
    """Active pairs per head at n, summed over one schedule cycle."""
    entries = attention_entries(spec, compile_layers(spec, seq_len=n))
    return sum(count * (pattern.stats().active_pairs or 0.0) for count, pattern in entries)


def growth(spec: Spec, n: int) -> Growth | None:
    """How active pairs grow from n to 2n (a grid: its first axis doubled); None for run-time patterns."""
    if spec.is_dynamic():
        return None
    try:
        if spec.grid is not None:
            bigger = doubled_grid(spec)
            return Growth(n, _active_pairs(spec, n), _active_pairs(bigger, bigger.seq_len or 0), bigger.seq_len or 0)
        return Growth(n, _active_pairs(spec, n), _active_pairs(spec, 2 * n), 2 * n)
    except SpecError:
        return None  # valid at n but not at twice n (an offset written in n, say): no growth to measure


def doubled_grid(spec: Spec) -> Spec:
    """The spec on a grid whose first axis is twice as long (kernels, tiles and text unchanged)."""
    data = spec.to_data()
    data.pop("seq_len", None)
    data["grid"]["shape"][0] *= 2
    return Spec.model_validate(data)


def grid_families(spec: Spec, n: int) -> list[str]:
    """NATTEN and STA parts of the spec, named, with what each query attends."""
    out = []
    for panel in spec_panels(spec, n):
        for leaf in panel.layout.rule.leaves():
            if isinstance(leaf, GridWindowRule):
                family = FAMILIES[leaf.name]
                keys = leaf.keys_per_query()
                out.append(
                    f"{leaf.origin}: {family}, {leaf.params} on the {leaf.canvas.describe()}: each query attends "
                    f"at most {keys:,} grid keys, so O(n · {keys:,}) = O(n) pairs for a fixed kernel"
                )
    return out


def similar_specs(spec: Spec, n: int, source: Path | None, top: int = 3) -> tuple[list[Recognition], list[str]]:
    """The `top` catalogue specs this one resembles most (`maskc.recognise`), and masks not compared."""
    ranked, skipped = rank(spec, n, source)
    return ranked[:top], skipped


# ----------------------------------------------------------------------------- warnings


def empty_row_warnings(spec: Spec, n: int, documents: Any = None) -> list[str]:
    out = []
    for panel in spec_panels(spec, n, documents=documents):
        if panel.layout.rule.dynamic:
            continue
        empty = panel.layout.empty_rows()
        if len(empty):
            out.append(
                f"{panel.title}: {len(empty)} query row(s) attend no key ({format_ranges(empty.tolist(), shown=4)}); "
                "backends output zeros there"
            )
    return out


def _steps(rule: Rule) -> set[int]:
    """Dilations and strides (band steps > 1) among the rule's primitives."""
    return {leaf.step for leaf in rule.leaves() if isinstance(leaf, BandRule) and leaf.step > 1}


def residue_warnings(spec: Spec, n: int, documents: Any = None) -> list[str]:
    """A dilation or stride d whose residue classes mod d never exchange information, in any layer or head.

    Cluster parts count as attending anything (their upper bound), so a warning is never a false alarm.
    """
    entries = compile_layers(spec, seq_len=n, documents=documents)
    layouts = [layout for _, pattern in entries for layout in pattern.layouts]
    rules = [layout.rule.static_bound(lower=False) if layout.rule.dynamic else layout.rule for layout in layouts]
    out = []
    for step in sorted(set().union(*(_steps(rule) for rule in rules))):
        same_class = BandRule(unit=1, lo=None, hi=None, step=step, origin=named(f"residue mod {step}"))
        crossing = (build_layout(DifferenceRule([rule, same_class]), layouts[0].grid).nnz for rule in rules)
        if not any(crossing):
            out.append(
                f"dilation/stride {step}: every attended pair has i ≡ j (mod {step}) in every layer and head, "
                f"so the {step} residue classes never exchange information; add an undilated window, "
                "a global token or a head without the step"
            )
    return out


def reach_warning(spec: Spec, n: int, layers: int | None, documents: Any = None) -> tuple[int | None, list[str]]:
    """min_layers at n, and a warning when `layers` (or any depth, when never) does not connect the sequence."""
    report = verify(spec, layers=layers or 1, seq_len=n, documents=documents)
    static = " (run-time edges, decided per call, left out)" if report.dynamic_ignored else ""
    if report.min_layers is None:
        return None, [f"no depth connects the sequence{static}: reach stops growing before every pair is reached"]
    if layers is None or report.reachable:
        return report.min_layers, []
    i, j = report.counterexample
    got = f"; it gets to {report.reach.describe()}" if report.reach is not None else ""
    return report.min_layers, [
        f"{layers} layers do not connect the sequence{static}: key {j} does not reach query {i}{got}. "
        f"The pattern needs {report.min_layers} layers at n = {n}: widen the window or add global tokens"
    ]


def explain(
    spec: Spec,
    seq_len: int | None = None,
    layers: int | None = None,
    source: Path | None = None,
    documents: Any = None,
    seed: int | None = None,
) -> Explanation:
    """Everything `maskc explain` prints. `layers` defaults to the depth of the spec's schedule, if any;
    `documents` (one id per position) resolve the document parts, `seed` the parts q and k decide
    (from random q and k drawn with it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)  # empty rows are reported among the warnings
        pattern = compile(spec, seq_len=seq_len, schedule="auto")
        n = pattern.n
        depth = layers or schedule_depth(spec)
        min_layers, reach = reach_warning(spec, n, depth, documents)
        similar, skipped = similar_specs(spec, n, source)
        return Explanation(
            spec=spec,
            n=n,
            depth=depth,
            parts=describe_parts(spec, n, documents, seed),
            densities=schedule_densities(spec, n, documents),
            growth=growth(spec, n),
            similar=similar,
            skipped=skipped,
            min_layers=min_layers,
            warnings=reach + residue_warnings(spec, n, documents) + empty_row_warnings(spec, n, documents),
            kv_cache=kv_retention(spec, seq_len=n),
            families=grid_families(spec, n),
            schedule=[] if pattern.dynamic else schedule_reasons(pattern, schedule_of(pattern)),
        )
