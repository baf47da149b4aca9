"""The catalogue: every spec in specs/ summarised side by side (density, FLOPs, layers to connect).

The same table goes to the terminal (`maskc catalogue`) and, as markdown between two markers, to
the README, so the README's figures are whatever the code computes today.
"""

from __future__ import annotations

import re
import textwrap
import warnings
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from maskc.compiler import compile, compile_layers
from maskc.errors import MaskcError, MaskcWarning
from maskc.ir import CompiledPattern
from maskc.loader import load
from maskc.spec import Spec
from maskc.verify import verify

README_START = "<!-- catalogue:start -->"
README_END = "<!-- catalogue:end -->"
_HEADERS = ("spec", "source", "n", "depth", "density", "FLOPs vs dense", "tile FLOPs vs dense", "min_layers")
_NOTES = (
    "density: active (i, j) pairs / n², averaged over heads and over the layer schedule "
    "(a layer without attention, `mixer: recurrent` or `identity`, counts as none). "
    "FLOPs vs dense: the attention FLOPs that density means, against dense attention. "
    "tile FLOPs: what a block-sparse kernel computes, the area of the stored tiles at the spec's block size. "
    "depth: the layers of one schedule cycle (— when the spec has no schedule). "
    "min_layers: the fewest layers after which every token reaches every token it must (`maskc verify`); "
    "never when no depth suffices.",
    "Cluster (run-time) patterns: density is decided by q and k at run time, and min_layers counts the "
    "static part only (marked *).",
)


def catalogue_dir() -> Path:
    """The installed catalogue: the specs/ folder, installed as the package `maskc.specs`."""
    return Path(str(resources.files("maskc.specs"))).resolve()


def catalogue_specs(folder: Path | None = None) -> list[tuple[Path, Spec]]:
    """(file, spec) for every *.yaml in the folder, sorted by file name."""
    folder = catalogue_dir() if folder is None else Path(folder)
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise MaskcError(f"no spec files (*.yaml) in {folder}")
    return [(path, load(path)) for path in files]


def schedule_depth(spec: Spec) -> int | None:
    """Layers in one cycle of the spec's schedule; None when the spec declares none."""
    return sum(entry.count for entry in spec.layers) or None


@dataclass(frozen=True)
class Densities:
    """Per-head averages over one cycle of the layer schedule, weighted by each entry's count."""

    #: Active pairs / n²; None when a run-time (cluster) part decides it.
    element: float | None
    #: Stored tile area / n².
    tile: float


def attention_entries(spec: Spec, entries: list[tuple[int, CompiledPattern]]) -> list[tuple[int, CompiledPattern]]:
    """The entries of `compile_layers(spec)` that are attention: the others compute no attention FLOPs."""
    return [entry for entry, mixer in zip(entries, spec.layer_mixers()) if mixer == "attention"]


def schedule_densities(spec: Spec, n: int, documents: Any = None) -> Densities:
    """Element and tile density of the spec at n, over its layer schedule (`documents` resolve document parts)."""
    entries = compile_layers(spec, seq_len=n, documents=documents)
    layers = sum(count for count, _ in entries)
    stats = [(count, pattern.stats()) for count, pattern in attention_entries(spec, entries)]
    dynamic = any(s.element_density is None for _, s in stats)
    element = None if dynamic else sum(count * (s.element_density or 0.0) for count, s in stats) / layers
    return Densities(element=element, tile=sum(count * s.tile_density for count, s in stats) / layers)


@dataclass(frozen=True)
class Summary:
    """One catalogue row."""

    name: str
    source: str
    n: int
    depth: int | None
    densities: Densities
    min_layers: int | None
    dynamic: bool

    def cells(self) -> tuple[str, ...]:
        element = self.densities.element
        star = "*" if self.dynamic else ""
        return (
            self.name,
            self.source,
            str(self.n),
            "—" if self.depth is None else str(self.depth),
            "run time" if element is None else _percent(element),
            "run time" if element is None else _fewer(element),
            "run time" if self.dynamic else _fewer(self.densities.tile),
            ("never" if self.min_layers is None else str(self.min_layers)) + star,
        )


def _percent(value: float) -> str:
    return f"{value:.2%}" if value >= 0.001 else f"{value:.4%}"


def _fewer(density: float) -> str:
    """A density as a cost against dense: '1/8.0' means eight times fewer."""
    return "0" if density == 0 else ("1" if density >= 0.9995 else f"1/{1 / density:,.1f}")


def summarise(path: Path, spec: Spec, seq_len: int | None = None) -> Summary:
    """The catalogue row of one spec at n = seq_len (default: the spec's own)."""
    n = compile(spec, seq_len=seq_len).n
    report = verify(spec, layers=schedule_depth(spec) or 1, seq_len=n)
    return Summary(
        name=path.stem,
        source=spec.description or spec.name,
        n=n,
        depth=schedule_depth(spec),
        densities=schedule_densities(spec, n),
        min_layers=report.min_layers,
        dynamic=spec.is_dynamic(),
    )


def _summary_from(data: Any) -> Summary | None:
    """A Summary from its JSON form, or None when any field is missing or of the wrong type."""
    try:
        dens = data["densities"]
        element, tile = dens["element"], dens["tile"]
        row = Summary(
            name=data["name"],
            source=data["source"],
            n=data["n"],
            depth=data["depth"],
            densities=Densities(element=element, tile=tile),
            min_layers=data["min_layers"],
            dynamic=data["dynamic"],
        )
    except (KeyError, TypeError):
        return None
    numbers_ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (tile, row.n))
    optional_ok = all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
        for v in (element, row.depth, row.min_layers)
    )
    texts_ok = isinstance(row.name, str) and isinstance(row.source, str) and isinstance(row.dynamic, bool)
    return row if numbers_ok and optional_ok and texts_ok else None


def catalogue(folder: Path | None = None, seq_len: int | None = None) -> list[Summary]:
    """Every spec's row. Rows are kept on disk (see catalogue_cache) and computed only when missing.

    The installed specs document their own oddities (sparse_transformer_fixed_heads's keyless
    rows, for one); their compile warnings are for `maskc check`, not for every catalogue run.
    """
    from maskc.catalogue_cache import RowCache

    cache = RowCache.open()
    rows = []
    with warnings.catch_warnings():
        if folder is None:
            warnings.simplefilter("ignore", MaskcWarning)
        for path, spec in catalogue_specs(folder):
            row = _summary_from(cache.get(spec, seq_len))
            if row is None or row.name != path.stem:
                row = summarise(path, spec, seq_len)
                cache.put(spec, seq_len, asdict(row))
            rows.append(row)
    cache.save()
    return rows


def text_table(rows: list[Summary]) -> str:
    """A fixed-width table for the terminal."""
    cells = [_HEADERS, *(row.cells() for row in rows)]
    widths = [max(len(line[k]) for line in cells) for k in range(len(_HEADERS))]
    right = {2, 3, 4, 5, 6, 7}
    lines = [
        "  ".join(cell.rjust(w) if k in right else cell.ljust(w) for k, (cell, w) in enumerate(zip(line, widths)))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [line for note in _NOTES for line in textwrap.wrap(note, width=100)]
    return "\n".join([*lines, "", *notes])


def markdown_table(rows: list[Summary]) -> str:
    """The README block, markers included."""
    align = ["---", "---", *["---:"] * 6]
    lines = [
        README_START,
        "<!-- generated by `maskc catalogue --markdown`; tests/test_catalogue.py checks that it is current -->",
        "",
        "| " + " | ".join(_HEADERS) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |" for row in rows),
        "",
        *(f"{note}\n" for note in _NOTES),
        README_END,
    ]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    """`text` with its catalogue block (between the markers) replaced by `block`."""
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        raise MaskcError(f"no catalogue block ({README_START} … {README_END}) to replace")
    return pattern.sub(lambda _: block, text, count=1)


def readme_block(text: str) -> str | None:
    """The catalogue block of a README text, markers included; None when it has none."""
    start, end = text.find(README_START), text.find(README_END)
    return None if start < 0 or end < start else text[start : end + len(README_END)]
