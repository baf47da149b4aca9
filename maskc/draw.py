"""Pictures of a spec: its mask with each cell coloured by the primitive that lit it, and reach maps.

A spec becomes panels, one per distinct pattern over its heads and layer schedule. Each panel is
computed from the IR: stored tiles only, one evaluation per class of identical tiles, so a
picture of a large n costs what the layout costs. Beyond a few hundred tokens a cell stands for
an s × s region of the matrix and shows whether any pair in it is active (exact, not sampled).
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from maskc import limits
from maskc.compiler import compile, compile_layers
from maskc.errors import MaskcError, TooLargeError
from maskc.grid import TileGrid
from maskc.ir import BlockLayout, CompiledPattern
from maskc.origin import Origin
from maskc.primitives import PatternNode
from maskc.rules import CombinatorRule, DifferenceRule, EmptyRule, Rule, evaluate_tiles, tile_classes
from maskc.spec import Spec
from maskc.text import format_ranges

#: Widest mask printed as text (one character per key).
ASCII_LIMIT = 128
#: Most cells per side in a picture (about 2 screen pixels each, so one lit cell stays visible);
#: larger n is shown in s × s regions, s a power of two.
PICTURE_CELLS = 256
#: Largest n for the layer-count map (dense boolean matrix products, n² memory).
REACH_LIMIT = 2048
#: Label of a cell that no primitive lights.
NOTHING = np.iinfo(np.int16).max

_ASCII_SYMBOLS = "#@%*+=ox&$"
_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
_TILE_SHADES = {"partial": "#e4e4e4", "full": "#c4cedb"}
#: About how many screen pixels a panel's matrix spans (5.2 inches at 150 dpi, less the margins).
_PANEL_PIXELS = 620


@dataclass
class Panel:
    """One distinct pattern of a spec: where it applies, its layout, and names for its primitives."""

    title: str
    layout: BlockLayout
    root: PatternNode
    #: Layer number (1-based, one schedule cycle) → the heads that use this pattern there.
    uses: dict[int, list[int]] = field(default_factory=dict)
    #: "attention", or the layer's mixer when it has none (its panel shows the relation it mixes by).
    mixer: str = "attention"

    @property
    def heads(self) -> list[int]:
        return sorted({h for heads in self.uses.values() for h in heads})

    @property
    def rule(self) -> Rule:
        """The rule drawn: a dynamic (cluster) part is left out, as nothing decides it before run time."""
        rule = self.layout.rule
        return rule.static_bound(lower=True) if rule.dynamic else rule


def _panel_title(panel: Panel, spec: Spec, several: bool) -> str:
    """Where a pattern applies, e.g. "heads 0–1 · layers 7–12": one part per distinct set of heads."""
    layers_of: dict[tuple[int, ...], list[int]] = {}
    for layer, heads in sorted(panel.uses.items()):
        layers_of.setdefault(tuple(heads), []).append(layer)
    heads_total = spec.heads or 1
    parts = []
    for heads, layers in layers_of.items():
        words = []
        if len(heads) < heads_total or (several and heads_total > 1):
            words.append(f"head{'s' if len(heads) > 1 else ''} {format_ranges(heads)}")
        if spec.layers:
            words.append(f"layer{'s' if len(layers) > 1 else ''} {format_ranges(layers)}")
        parts.append(" · ".join(words))
    title = "; ".join(part for part in parts if part) or spec.name
    return title if panel.mixer == "attention" else f"{title} ({panel.mixer} mixer, no attention)"


def typical_resolution(pattern: CompiledPattern, seed: int, head_dim: int = 64) -> CompiledPattern:
    """The pattern with its q/k-decided parts (clusters, top-k) resolved from seeded random q and k,
    keeping the first head of each distinct pattern: what a picture of a typical call shows."""
    import torch

    from maskc.clustering import resolve_dynamic

    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, pattern.heads, pattern.n, head_dim, generator=gen) for _ in range(2))
    resolved = resolve_dynamic(pattern, q, k)[0]
    first = [int(np.flatnonzero(pattern.head_layout == index)[0]) for index in range(len(pattern.layouts))]
    return replace(pattern, layouts=tuple(resolved.layouts[h] for h in first), _tensors={})


def spec_panels(
    spec: Spec,
    n: int,
    block_size: int | tuple[int, int] | None = None,
    documents: Any = None,
    seed: int | None = None,
) -> list[Panel]:
    """One panel per distinct pattern over the spec's heads and its layer schedule (one cycle);
    `documents` (one id per position) resolve the document parts, `seed` the parts decided by q and
    k (from random q and k drawn with it)."""
    panels: dict[str, Panel] = {}
    layer = 0
    entries = compile_layers(spec, seq_len=n, block_size=block_size, documents=documents)
    for (count, pattern), mixer in zip(entries, spec.layer_mixers()):
        layer_spec = pattern.spec
        if seed is not None and pattern.dynamic:
            pattern = typical_resolution(pattern, seed)
        nodes, _ = layer_spec.distinct_head_patterns(pattern.heads)
        for index, node in enumerate(nodes):
            key = json.dumps([node.to_data(), layer_spec.causal, mixer], sort_keys=True)
            if key not in panels:
                panels[key] = Panel("", pattern.layouts[index], node, mixer=mixer)
            heads = np.flatnonzero(pattern.head_layout == index).tolist()
            panels[key].uses.update({k: heads for k in range(layer + 1, layer + count + 1)})
        layer += count
    for panel in panels.values():
        panel.title = _panel_title(panel, spec, several=len(panels) > 1)
    return list(panels.values())


# ----------------------------------------------------------------------------- which primitive lit a cell


def lighting_leaves(rule: Rule) -> list[Rule]:
    """Primitive rules that can light a cell, in spec order: a difference's subtracted side cannot."""
    if isinstance(rule, DifferenceRule):
        return lighting_leaves(rule.kids[0])
    if isinstance(rule, CombinatorRule):
        return [leaf for kid in rule.kids for leaf in lighting_leaves(kid)]
    return [] if isinstance(rule, EmptyRule) else [rule]


def _node_at(root: PatternNode, steps: list[int]) -> PatternNode | None:
    node = root
    for step in steps:
        kids = getattr(node, "of", None)
        if kids is None or step >= len(kids):
            return None
        node = kids[step]
    return node


def leaf_name(panel: Panel, leaf: Rule) -> str:
    """The spec-level name of a primitive rule, e.g. "window before=256 after=256" or "global tokens=[0] (rows)"."""
    origin = leaf.origin
    steps = origin.pattern_steps() if isinstance(origin, Origin) else None
    node = None if steps is None else _node_at(panel.root, list(steps))
    if node is None:
        return f"{origin}: {leaf.describe()}"
    ((kind, params),) = node.to_data().items()
    args = " ".join(f"{key}={value}" for key, value in params.items()) if isinstance(params, dict) else ""
    if kind == "window" and isinstance(params, dict) and "size" in params:
        before, after = node.offsets(panel.layout.grid.n, origin)  # type: ignore[attr-defined]
        args += f" (before={before} after={after}: {before + after + 1} keys per row)"
    return f"{kind} {args}".strip() + (f" ({origin.part})" if origin.part else "")


def leaf_labels(rule: Rule, leaves: list[Rule], grid: TileGrid, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per given tile (len(r), BM, BN): index of the first leaf holding at each active element, else NOTHING."""
    active = evaluate_tiles(rule, grid, r, c)
    labels = np.full(active.shape, NOTHING, dtype=np.int16)
    for index, leaf in enumerate(leaves):
        unset = active & (labels == NOTHING)
        if unset.any():
            labels[unset & evaluate_tiles(leaf, grid, r, c)] = index
    return labels


def class_labels(
    rule: Rule, leaves: list[Rule], grid: TileGrid, r: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Labels per class of identical tiles (classes, BM, BN): index of the first leaf holding at each
    active element, else NOTHING; and each tile's class. Tiles are grouped by the rule's signature
    (which includes every leaf's), so each class is evaluated once."""
    if len(r) == 0:
        return np.full((0, grid.block_m, grid.block_n), NOTHING, dtype=np.int16), np.zeros(0, dtype=np.int64)
    first, inverse = tile_classes(rule, grid, r, c)
    return leaf_labels(rule, leaves, grid, r[first], c[first]), inverse


def tile_labels(rule: Rule, leaves: list[Rule], grid: TileGrid, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per tile (len(r), BM, BN): index of the first leaf holding at each active element, else NOTHING."""
    labels, inverse = class_labels(rule, leaves, grid, r, c)
    return labels[inverse]


# ----------------------------------------------------------------------------- cell images


@dataclass(frozen=True)
class CellImage:
    """A panel rasterised to cells of s × s tokens."""

    labels: np.ndarray  # (cells, cells) int16: first leaf lighting any pair in the cell, NOTHING when none
    tiles: np.ndarray  # (cells, cells) int8: 0 no stored tile, 1 partial, 2 full (only when tiles ≥ cells)


def cell_scale(n: int, cells: int = PICTURE_CELLS) -> int:
    """Smallest power of two s with ⌈n / s⌉ ≤ cells."""
    scale = 1
    while -(-n // scale) > cells:
        scale *= 2
    return scale


#: Stored tiles spread onto the cell image at once (a few int64 tables of this many tiles × cells per tile).
_SPREAD_TILES = 1 << 20


def class_cells(
    rule: Rule, leaves: list[Rule], grid: TileGrid, r: np.ndarray, c: np.ndarray, sub_m: int, sub_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per class of identical tiles, its labels reduced to blocks of sub_m × sub_n elements (the
    smallest leaf index in each), and each tile's class. Each class is evaluated once, a few
    element masks at a time, so the work follows the classes (as compiling does), not the tiles."""
    first, inverse = tile_classes(rule, grid, r, c)
    shape = (grid.block_m // sub_m, sub_m, grid.block_n // sub_n, sub_n)
    cells = np.empty((len(first), shape[0], shape[2]), dtype=np.int16)
    step = max(1, (1 << 22) // (grid.block_m * grid.block_n))
    for lo in range(0, len(first), step):
        reps = first[lo : lo + step]
        labels = leaf_labels(rule, leaves, grid, r[reps], c[reps])
        # min over the last axis first: contiguous reductions are many times faster than one over two strided axes
        cells[lo : lo + step] = labels.reshape(len(reps), *shape).min(axis=4).min(axis=2)
    return cells, inverse


def rasterise(panel: Panel, leaves: list[Rule], scale: int) -> CellImage:
    """Cell image of a panel: each cell takes the smallest leaf index among the active pairs in it.

    Drawn from the stored tiles: each class of identical tiles is evaluated once and reduced to
    cells, then spread over its tiles, so memory and time follow the stored tiles and the image,
    never n × n (at n = 2**31 - 1 a tile is a small part of one cell)."""
    layout, rule = panel.layout, panel.rule
    grid = layout.grid
    side = -(-grid.n // scale)
    labels = np.full(side * side, NOTHING, dtype=np.int16)
    tiles = np.zeros((side, side), dtype=np.int8)
    r, c, full = layout.tile_rows(), layout.col_idx.astype(np.int64), layout.full
    sub_m, sub_n = min(scale, grid.block_m), min(scale, grid.block_n)
    if len(r):
        cells, inverse = class_cells(rule, leaves, grid, r, c, sub_m, sub_n)
        for lo in range(0, len(r), _SPREAD_TILES):
            rr, cc = r[lo : lo + _SPREAD_TILES], c[lo : lo + _SPREAD_TILES]
            tile = cells[inverse[lo : lo + _SPREAD_TILES]]
            rows = (grid.row_first(rr)[:, None] + np.arange(0, grid.block_m, sub_m)[None, :]) // scale
            cols = (grid.col_first(cc)[:, None] + np.arange(0, grid.block_n, sub_n)[None, :]) // scale
            inside = (rows < side)[:, :, None] & (cols < side)[:, None, :]
            flat = rows[:, :, None] * side + cols[:, None, :]
            np.minimum.at(labels, flat[inside], tile[inside])
    if scale <= min(grid.block_m, grid.block_n):
        status = np.zeros((grid.row_tiles, grid.col_tiles), dtype=np.int8)
        status[r, c] = np.where(full, 2, 1)
        tiles = np.repeat(np.repeat(status, grid.block_m // scale, 0), grid.block_n // scale, 1)[:side, :side]
    return CellImage(labels.reshape(side, side), tiles)


# ----------------------------------------------------------------------------- text


def legend(panels: list[Panel]) -> tuple[list[str], list[list[int]]]:
    """Names in order of first appearance, and per panel the name index of each lighting leaf."""
    names: list[str] = []
    per_panel = []
    for panel in panels:
        indices = []
        for leaf in lighting_leaves(panel.rule):
            name = leaf_name(panel, leaf)
            if name not in names:
                names.append(name)
            indices.append(names.index(name))
        per_panel.append(indices)
    return names, per_panel


def _check_text_size(n: int) -> None:
    if n > ASCII_LIMIT:
        raise TooLargeError(
            f"n = {n} is too wide to print as text (limit {ASCII_LIMIT} columns); "
            f"pass --png FILE for a picture, or --seq-len {ASCII_LIMIT} or less"
        )


def _dynamic_note(panels: list[Panel]) -> list[str]:
    if any(panel.layout.rule.dynamic for panel in panels):
        return ["run-time parts (clusters, top-k, documents) are decided per call: only the static part is shown"]
    return []


def ascii_mask(
    spec: Spec,
    n: int,
    block_size: int | tuple[int, int] | None = None,
    documents: Any = None,
    seed: int | None = None,
) -> str:
    """The mask as text: a symbol per active pair, '.' for a masked pair in a stored tile, ' ' elsewhere."""
    _check_text_size(n)
    panels = spec_panels(spec, n, block_size, documents, seed)
    names, per_panel = legend(panels)
    symbols = [_ASCII_SYMBOLS[k % len(_ASCII_SYMBOLS)] for k in range(len(names))]
    out = [f"{spec.name}: n = {n}, query i down, key j across"]
    used: set[int] = set()
    for panel, indices in zip(panels, per_panel):
        image = rasterise(panel, lighting_leaves(panel.rule), 1)
        used.update(indices[label] for label in np.unique(image.labels) if label != NOTHING)
        grid = panel.layout.grid
        out.append("")
        out.append(f"[{panel.title}]  tiles {grid.block_m} x {grid.block_n}")
        for i in range(n):
            row = "".join(
                symbols[indices[label]] if label != NOTHING else ("." if stored else " ")
                for label, stored in zip(image.labels[i], image.tiles[i])
            )
            out.append(f"{i:>4} {row}")
    out.append("")
    out += [f"  {symbols[k]}  {names[k]}" for k in sorted(used)]
    out += ["  .  masked pair inside a stored tile (computed, then masked)"]
    out += _dynamic_note(panels)
    return "\n".join(out)


# ----------------------------------------------------------------------------- pictures


def _figure(panels: int, panel_inches: float = 5.2) -> tuple[Any, list[Any]]:
    """An Agg figure (no global pyplot state) with one axis per panel, at most 3 per row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(panels, 3)
    rows = -(-panels // columns)
    figure = Figure(
        figsize=(max(panel_inches * columns, 8.0), panel_inches * rows + 1.6), dpi=150, layout="constrained"
    )
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(rows, columns, k + 1) for k in range(panels)]
    return figure, axes


def _wrapped(figure: Any, text: str) -> str:
    """Title text wrapped to the figure's width (about 14 characters per inch at 10 pt)."""
    return "\n".join(textwrap.wrap(text, width=int(figure.get_figwidth() * 14)))


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[k : k + 2], 16) for k in (1, 3, 5)], dtype=np.float64) / 255


def primitive_colour(index: int) -> str:
    """The colour of the `index`-th legend name (the palette cycles)."""
    return _PALETTE[index % len(_PALETTE)]


def cell_colour_index(image: CellImage, indices: list[int]) -> tuple[np.ndarray, np.ndarray, set[int], set[str]]:
    """A cell image as indices into a colour table (RGB rows in [0, 1]): white, the two stored-tile shades,
    then one colour per legend name (`indices` maps a leaf to its name); also the names and shades shown."""
    names = max(indices, default=-1) + 1
    table = np.vstack(
        [_rgb("#ffffff"), _rgb(_TILE_SHADES["partial"]), _rgb(_TILE_SHADES["full"])]
        + [_rgb(primitive_colour(k)) for k in range(names)]
    ).reshape(-1, 3)
    lit = image.labels != NOTHING
    leaf_colour = np.asarray([3 + name for name in indices] or [0], dtype=np.int16)
    index = np.where(lit, leaf_colour[np.where(lit, image.labels, 0)], image.tiles.astype(np.int16))
    shown = np.unique(index)
    used = {int(k) - 3 for k in shown if k >= 3}
    shades = {name for k, name in ((1, "partial"), (2, "full")) if k in shown}
    return index, table, used, shades


def cell_colours(image: CellImage, indices: list[int]) -> tuple[np.ndarray, set[int], set[str]]:
    """RGB in [0, 1] of a cell image: a lit cell in its primitive's colour (`indices` maps a leaf to its
    legend name), a masked cell of a stored tile shaded; also the names and shades that appear."""
    index, table, used, shades = cell_colour_index(image, indices)
    return table[index], used, shades


def tile_shade(kind: str) -> str:
    """The colour of a masked pair inside a stored tile of kind "partial" or "full"."""
    return _TILE_SHADES[kind]


def _scale_note(n: int, scale: int) -> str:
    return "" if scale == 1 else f"; a cell is {scale}×{scale} tokens, lit when any pair in it is active"


def _tile_overlay(axis: Any, grid: TileGrid, n: int) -> None:
    """Tile grid lines, drawn when tiles are wide enough on screen to read."""
    if min(grid.block_m, grid.block_n) * _PANEL_PIXELS / n < 5:
        return
    for x in range(grid.block_n, n, grid.block_n):
        axis.axvline(x, color="white", linewidth=0.4)
    for y in range(grid.block_m, n, grid.block_m):
        axis.axhline(y, color="white", linewidth=0.4)


def _save(figure: Any, path: str | Path) -> None:
    try:
        figure.savefig(path, format="png")
    except OSError as err:
        raise MaskcError(f"cannot write the picture to {path}: {err.strerror or err}") from None


def mask_png(
    spec: Spec,
    n: int,
    path: str | Path,
    block_size: int | tuple[int, int] | None = None,
    documents: Any = None,
    seed: int | None = None,
) -> str:
    """Draw every distinct pattern of the spec to a PNG; returns a one-line summary."""
    from matplotlib.patches import Patch

    panels = spec_panels(spec, n, block_size, documents, seed)
    names, per_panel = legend(panels)
    colours = [primitive_colour(k) for k in range(len(names))]
    scale = cell_scale(n)
    figure, axes = _figure(len(panels))
    used: set[int] = set()
    shades: set[str] = set()
    for axis, panel, indices in zip(axes, panels, per_panel):
        image = rasterise(panel, lighting_leaves(panel.rule), scale)
        rgb, lit, shaded = cell_colours(image, indices)
        used |= lit
        shades |= shaded
        axis.imshow(rgb, extent=(0, n, n, 0), interpolation="nearest")
        layout = panel.layout
        _tile_overlay(axis, layout.grid, n)
        run_time = "; run-time part decided per call, not drawn" if layout.rule.dynamic else ""
        axis.set_title(
            f"{panel.title}\n{layout.nnz} tiles stored ({layout.full_count} full) of "
            f"{layout.grid.row_tiles * layout.grid.col_tiles}{run_time}",
            fontsize=9,
        )
        axis.set_xlabel("key j", fontsize=8)
        axis.set_ylabel("query i", fontsize=8)
        axis.tick_params(labelsize=7)
    handles = [Patch(color=colours[k], label=names[k]) for k in sorted(used)]
    handles += [Patch(color=_TILE_SHADES[k], label=f"masked pair in a {k} stored tile") for k in sorted(shades)]
    columns = 2 if len(panels) == 1 else 3
    figure.legend(handles=handles, loc="outside lower center", ncol=columns, fontsize=8, frameon=False)
    grid = panels[0].layout.grid
    title = f"{spec.name}: n = {n}, tiles {grid.block_m}×{grid.block_n}{_scale_note(n, scale)}"
    figure.suptitle(_wrapped(figure, ". ".join([title, *_dynamic_note(panels)])), fontsize=10)
    _save(figure, path)
    return f"wrote {path}: {len(panels)} panel(s), n = {n}, {-(-n // scale)} cells per side"


# ----------------------------------------------------------------------------- reach


def layer_masks(spec: Spec, n: int) -> list[np.ndarray]:
    """One (n, n) mask per layer of one schedule cycle: the union over heads, cluster parts left out."""
    _check_reach_size(n)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    masks = []
    for count, layer_spec in spec.layer_schedule():
        pattern = compile(layer_spec, seq_len=n)
        union = np.zeros((n, n), dtype=bool)
        for layout in pattern.layouts:
            rule = layout.rule.static_bound(lower=True) if layout.rule.dynamic else layout.rule
            union |= rule.mask(i, j)
        masks += [union] * count
    return masks


def _check_reach_size(n: int) -> None:
    if n > REACH_LIMIT:
        raise TooLargeError(
            f"the layer-count map multiplies dense n × n matrices; n = {n} is over its limit of {REACH_LIMIT}. "
            "Use a smaller --seq-len (or `maskc verify` for a proof at full size)"
        )


def layers_needed(spec: Spec, n: int, layers: int) -> np.ndarray:
    """(n, n) int16: the fewest layers (≤ `layers`) after which key j's information is at query i, −1 if never.

    Every layer has a residual connection, so a token keeps what it had: after layer l, i holds j when
    some p with (i, p) in layer l's mask ∪ identity held j before. The schedule cycles over the depth.
    """
    if layers > limits.MAX_REACH_LAYERS:
        raise TooLargeError(limits.exceeds("--reach", layers, "MAX_REACH_LAYERS"))
    cycle = layer_masks(spec, n)
    need = np.full((n, n), -1, dtype=np.int16)
    np.fill_diagonal(need, 0)
    held = np.eye(n, dtype=np.float32)
    # A causal pattern never carries j's information to i < j; those pairs are not waited for.
    required = np.tril(np.ones((n, n), dtype=bool)) if spec.causal else np.ones((n, n), dtype=bool)
    unchanged = 0
    for layer in range(1, layers + 1):
        step = cycle[(layer - 1) % len(cycle)] | np.eye(n, dtype=bool)
        grown = ((step.astype(np.float32) @ held) > 0).astype(np.float32)
        # Unchanged through a whole cycle of the schedule: a fixed point of every layer, so it never grows.
        unchanged = unchanged + 1 if np.array_equal(grown, held) else 0
        held = grown
        need[(held > 0) & (need < 0)] = layer
        if (need[required] >= 0).all() or unchanged >= len(cycle):
            break
    return need


def ascii_reach(spec: Spec, n: int, layers: int) -> str:
    """The layer-count map as text: a digit per pair (+ for 10 or more), '-' for never within L layers."""
    _check_text_size(n)
    need = layers_needed(spec, n, layers)
    out = [f"{spec.name}: layers for key j (across) to reach query i (down), n = {n}, L = {layers}"]
    for i in range(n):
        cells = []
        for j in range(n):
            value = int(need[i, j])
            if spec.causal and j > i:
                cells.append(" ")
            else:
                cells.append("-" if value < 0 else (str(value) if value < 10 else "+"))
        out.append(f"{i:>4} {''.join(cells)}")
    out.append("  digit: layers needed (0 on the diagonal);  - : not within L layers")
    return "\n".join(out)


def reach_cells(need: np.ndarray, layers: int, causal: bool, scale: int) -> np.ndarray:
    """The layer-count map in s × s cells, each showing its slowest pair: −1 a pair not required (causal),
    0 the token itself, 1 … L the layers needed, L + 1 not within L layers."""
    n = len(need)
    worst = np.where(need < 0, layers + 1, np.minimum(need, layers + 1)).astype(np.int32)
    if causal:
        worst[np.triu_indices(n, 1)] = -1
    side = -(-n // scale)
    padded = np.full((side * scale, side * scale), -1, dtype=np.int32)
    padded[:n, :n] = worst
    return padded.reshape(side, scale, side, scale).max(axis=(1, 3))


def reach_colours(layers: int) -> np.ndarray:
    """RGB rows in [0, 1] for the values of `reach_cells`, from −1 to L + 1."""
    import matplotlib

    ramp = matplotlib.colormaps["viridis_r"](np.linspace(0.0, 0.9, layers))[:, :3]
    return np.vstack([_rgb("#ffffff"), _rgb("#000000"), ramp, _rgb("#d0d0d0")])


def reach_png(spec: Spec, n: int, layers: int, path: str | Path) -> str:
    """Heat map of `layers_needed`; beyond PICTURE_CELLS tokens a cell shows the worst pair in its region."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    need = layers_needed(spec, n, layers)
    scale = cell_scale(n)
    cells = reach_cells(need, layers, spec.causal, scale)
    colours = [tuple(c) for c in reach_colours(layers)]
    figure, (axis,) = _figure(1)
    shown = axis.imshow(
        cells,
        extent=(0, n, n, 0),
        interpolation="nearest",
        cmap=ListedColormap(colours),
        norm=BoundaryNorm(np.arange(-1.5, layers + 2.5), len(colours)),
    )
    ticks = [*range(1, layers + 1, max(1, layers // 12)), layers + 1]
    bar = figure.colorbar(shown, ax=axis, ticks=ticks, shrink=0.8)
    bar.ax.set_yticklabels([f"not within {layers}" if t == layers + 1 else str(t) for t in ticks], fontsize=7)
    bar.ax.set_ylim(0.5, layers + 1.5)
    bar.set_label("layers needed", fontsize=8)
    reached = int((need >= 0).sum() - n)
    pairs = n * (n - 1) // (2 if spec.causal else 1)
    title = (
        f"{spec.name}: layers for key j to reach query i (n = {n}, L = {layers}); "
        f"{reached:,} of {pairs:,} pairs reached, residual connections kept"
        + ("" if scale == 1 else f"; a cell is {scale}×{scale} tokens, showing its slowest pair")
    )
    figure.suptitle(_wrapped(figure, title), fontsize=10)
    axis.set_xlabel("key j", fontsize=8)
    axis.set_ylabel("query i", fontsize=8)
    _save(figure, path)
    return f"wrote {path}: layer counts for n = {n}, L = {layers}"
