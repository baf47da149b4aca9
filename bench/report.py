"""Markdown tables for the benchmarks' summaries (pasted into RESULTS.md as printed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """`rows` under `header`; `align` gives one letter per column, "r" right-aligned (numbers), any
    other left; left out, every column is left as markdown's default."""
    rules = [("---:" if a == "r" else "---") for a in align.ljust(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
