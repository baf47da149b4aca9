"""Text helpers shared by every layer that prints numbers for people."""

from __future__ import annotations

from collections.abc import Sequence


def format_ranges(values: Sequence[int], shown: int | None = None) -> str:
    """Sorted integers as runs: [0, 1, 2, 5] → "0–2, 5" (the first `shown` runs, then "…")."""
    runs: list[str] = []
    start = None
    for k, v in enumerate(values):
        start = v if start is None else start
        if k + 1 == len(values) or values[k + 1] != v + 1:
            runs.append(str(v) if start == v else f"{start}–{v}")
            start = None
    if shown is not None and len(runs) > shown:
        return ", ".join(runs[:shown]) + ", …"
    return ", ".join(runs)
