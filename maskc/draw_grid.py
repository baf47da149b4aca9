"""Pictures of a grid spec as its canvas shows it: the keys one query attends, drawn on the image.

An n × n matrix hides what a neighbourhood looks like; on the canvas it is a k × k square (a
k × k × k box over frames of a video) around the query, pushed inwards at the edges. Each cell
is coloured by the primitive that lit it, computed from the spec's exact rule (one query row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maskc.draw import _PALETTE, Panel, _figure, _rgb, _save, _wrapped, leaf_name, lighting_leaves, spec_panels
from maskc.errors import MaskcError
from maskc.rules import Canvas
from maskc.spec import Spec

#: Widest canvas printed as text (one character per cell).
TEXT_WIDTH = 160
#: Most frames of a video drawn (the frames nearest the query's).
FRAMES = 12
_QUERY, _KEY, _NONE = "@", "#", "."


def query_position(spec: Spec, query: str) -> int:
    """The storage position named by `query`: coordinates "r,c" ("t,r,c") on the grid, or "p" a position."""
    canvas = _canvas(spec)
    try:
        parts = [int(x) for x in query.split(",")]
    except ValueError:
        raise MaskcError(f"--query takes coordinates like 5,7 or one position, got {query!r}") from None
    if len(parts) == 1:
        if not 0 <= parts[0] < canvas.n:
            raise MaskcError(f"--query position {parts[0]} is not in 0 … {canvas.n - 1}")
        return parts[0]
    if len(parts) != canvas.ndim:
        raise MaskcError(f"--query has {len(parts)} coordinates but the grid has {canvas.ndim} axes {canvas.shape}")
    for axis, (x, size) in enumerate(zip(parts, canvas.shape)):
        if not 0 <= x < size:
            raise MaskcError(f"--query coordinate {x} on axis {axis} is not in 0 … {size - 1}")
    return int(canvas.positions([np.int64(x) for x in parts]))


def _canvas(spec: Spec) -> Canvas:
    if spec.grid is None:
        raise MaskcError(f"{spec.name} declares no grid; --query draws on a grid spec's canvas")
    return spec.grid.canvas()


def query_labels(panel: Panel, canvas: Canvas, position: int) -> np.ndarray:
    """Per key position: the index of the first lighting primitive that holds for (query, key), or −1."""
    keys = np.arange(canvas.n)
    query = np.full(canvas.n, position)
    labels = np.full(canvas.n, -1, dtype=np.int64)
    for index, leaf in enumerate(lighting_leaves(panel.rule)):
        hit = leaf.mask(query, keys) & panel.rule.mask(query, keys) & (labels < 0)
        labels[hit] = index
    return labels


def _frames(canvas: Canvas, labels: np.ndarray, position: int) -> tuple[list[int], np.ndarray]:
    """The frames drawn and the labels on the canvas, shape (frames, H, W) (one frame for a 2-D grid)."""
    shape = canvas.shape if canvas.ndim == 3 else (1, *canvas.shape)
    cells = np.arange(canvas.cells)
    coords = canvas.coords(cells)
    image = np.empty(shape, dtype=np.int64)
    image[tuple(coords) if canvas.ndim == 3 else (np.zeros_like(cells), *coords)] = labels[: canvas.cells]
    if canvas.ndim < 3:
        return [0], image
    at = int(canvas.coords(np.int64(min(position, canvas.cells - 1)))[0]) if position < canvas.cells else 0
    lit = [t for t in range(shape[0]) if (image[t] >= 0).any()]
    chosen = sorted(sorted(set(lit) | {at}, key=lambda t: (abs(t - at), t))[:FRAMES])
    return chosen, image[chosen]


def _caption(spec: Spec, canvas: Canvas, labels: np.ndarray, position: int) -> str:
    cells = int((labels[: canvas.cells] >= 0).sum())
    where = "text token" if position >= canvas.cells else f"cell {tuple(int(x) for x in canvas.coords(position))}"
    text = f", {int((labels[canvas.cells :] >= 0).sum())} of {canvas.text} text tokens" if canvas.text else ""
    return f"{spec.name}: query {position} ({where}) attends {cells} of {canvas.cells} grid cells{text}"


def ascii_query(spec: Spec, query: str) -> str:
    """The canvas as text, one character per cell: @ the query, # a key it attends, . the rest."""
    canvas = _canvas(spec)
    if canvas.shape[-1] > TEXT_WIDTH:
        raise MaskcError(f"a canvas {canvas.shape[-1]} cells wide is too wide for text; use --png FILE")
    position = query_position(spec, query)
    out = []
    for panel in spec_panels(spec, canvas.n):
        labels = query_labels(panel, canvas, position)
        frames, image = _frames(canvas, labels, position)
        out.append(_caption(spec, canvas, labels, position) + (f" [{panel.title}]" if panel.title != spec.name else ""))
        query_at = canvas.coords(np.int64(position)) if position < canvas.cells else None
        for t, frame in zip(frames, image):
            if canvas.ndim == 3:
                out.append(f"frame {t}")
            for row, line in enumerate(frame):
                chars = [_KEY if x >= 0 else _NONE for x in line]
                if query_at is not None and row == query_at[-2] and (canvas.ndim == 2 or t == query_at[0]):
                    chars[int(query_at[-1])] = _QUERY
                out.append("".join(chars))
    return "\n".join(out)


def query_png(spec: Spec, query: str, path: str | Path) -> str:
    """The keys one query attends, on the canvas (frames of a video side by side); one summary line."""
    from matplotlib.patches import Patch

    canvas = _canvas(spec)
    position = query_position(spec, query)
    panels = spec_panels(spec, canvas.n)
    panel = panels[0]
    labels = query_labels(panel, canvas, position)
    frames, image = _frames(canvas, labels, position)
    figure, axes = _figure(len(frames), panel_inches=3.2 if len(frames) > 1 else 5.2)
    leaves = lighting_leaves(panel.rule)
    colours = [_rgb(_PALETTE[k % len(_PALETTE)]) for k in range(len(leaves))]
    query_at = canvas.coords(np.int64(position)) if position < canvas.cells else None
    for axis, t, frame in zip(axes, frames, image):
        rgb = np.ones(frame.shape + (3,))
        for index, colour in enumerate(colours):
            rgb[frame == index] = colour
        axis.imshow(rgb, interpolation="nearest")
        if query_at is not None and (canvas.ndim == 2 or t == int(query_at[0])):
            axis.plot(int(query_at[-1]), int(query_at[-2]), marker="s", color="black", markersize=4)
        axis.set_title(f"frame {t}" if canvas.ndim == 3 else canvas.describe(), fontsize=8)
        axis.tick_params(labelsize=6)
    used = sorted({int(x) for x in np.unique(labels) if x >= 0})
    handles = [Patch(color=colours[k], label=leaf_name(panel, leaves[k])) for k in used]
    handles.append(Patch(color="black", label="the query"))
    figure.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    note = f" (first of {len(panels)} distinct patterns)" if len(panels) > 1 else ""
    figure.suptitle(_wrapped(figure, _caption(spec, canvas, labels, position) + note), fontsize=10)
    _save(figure, path)
    return f"wrote {path}: query {position} on the {canvas.describe()}, {len(frames)} frame(s)"
