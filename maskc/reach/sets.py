"""Sets of positions as sorted runs (maximal intervals): small for the interval-shaped sets reach produces."""

from __future__ import annotations

import numpy as np


def runs(reached: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximal intervals [start, end] of a boolean set."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], reached, [False])).astype(np.int8)))
    return edges[0::2], edges[1::2] - 1


class RunSet:
    """A set of positions stored as sorted runs: small for the interval-shaped sets that dominate."""

    def __init__(self, reached: np.ndarray) -> None:
        self.starts, self.ends = runs(reached)

    def contains(self, positions: np.ndarray) -> np.ndarray:
        k = np.searchsorted(self.starts, positions, side="right") - 1
        inside = k >= 0
        inside[inside] = positions[inside] <= self.ends[k[inside]]
        return inside
