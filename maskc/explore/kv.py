"""The KV cache a decoder keeps for a spec (`maskc.kv_retention`), as numbers and a picture per layer kind.

Decoding step t holds the keys j ≤ t that some query i ≥ t still attends; maskc derives that set
from the element rule. The picture puts decode steps down and key positions across: a cell is
coloured when the cache holds any key of it, grey when it has seen those keys and dropped them,
white for keys not yet written. Rows are drawn in cells like the mask: each row of cells shows the
keys kept at the last step of its span (exact for that step, a sample of the steps between).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskc.draw import cell_scale
from maskc.explore.images import png_data_url
from maskc.retention import Retention, kv_retention
from maskc.spec import Spec
from maskc.text import format_ranges

#: Colours: keys not yet written, keys seen and dropped, keys kept.
_TABLE = np.array([[1.0, 1.0, 1.0], [0.86, 0.86, 0.86], [0.58, 0.40, 0.74]])


def cache_cells(retention: Retention, n: int, cells: int) -> tuple[np.ndarray, int]:
    """(rows, cols) indices into _TABLE: row r shows step t = the last of its span; and the cell side s."""
    scale = cell_scale(n, cells)
    side = -(-n // scale)
    image = np.zeros((side, side), dtype=np.uint8)
    positions = np.arange(n)
    for row in range(side):
        t = min(n - 1, (row + 1) * scale - 1)
        state = np.zeros(side * scale, dtype=np.uint8)
        state[: t + 1] = 1
        state[: t + 1][retention.keeps(t, positions[: t + 1])] = 2
        image[row] = state.reshape(side, scale).max(axis=1)
    return image, scale


def kv_view(spec: Spec, n: int, cells: int) -> dict[str, Any]:
    """Per distinct retention over one schedule cycle: its layers, description, tokens and picture; and
    the whole cycle's cache against full attention's n keys per layer."""
    retentions = kv_retention(spec, seq_len=n)
    layers_of: dict[Retention, list[int]] = {}
    for layer, retention in enumerate(retentions, start=1):
        layers_of.setdefault(retention, []).append(layer)
    kinds = []
    for retention, layers in layers_of.items():
        image, scale = cache_cells(retention, n, cells)
        kinds.append(
            {
                "layers": format_ranges(layers),
                "count": len(layers),
                "describe": retention.describe(" per layer"),
                "tokens": retention.tokens(),
                "png": png_data_url(image, _TABLE),
                "scale": scale,
            }
        )
    sizes = [retention.tokens() for retention in retentions]
    return {
        "kinds": kinds,
        "layers": len(retentions),
        "total": None if None in sizes else sum(sizes),  # type: ignore[arg-type]
        "full": n * len(retentions),
        "colours": {"kept": _hex(_TABLE[2]), "dropped": _hex(_TABLE[1])},
    }


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgb)
