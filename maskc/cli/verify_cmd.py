"""`maskc verify SPEC --layers L`: prove that every token reaches every token it must, or refute it.

Exit 0 when proven, 1 when refuted, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from maskc.cli.options import add_documents_argument, add_spec_arguments, documents_and_seq_len, positive_int
from maskc.errors import ArgumentError
from maskc.loader import load
from maskc.verify import Report, Witness, verify

NAME = "verify"
HELP = "prove that every token reaches every token it must within L layers, or print a counterexample"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    add_documents_argument(parser)
    parser.add_argument(
        "--layers",
        type=positive_int,
        metavar="L",
        help="number of layers (default: one cycle of the spec's `layers:` schedule; required without one)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--path", nargs=2, type=int, metavar=("I", "J"), help="print a shortest path from key J to query I"
    )


class StderrProgress:
    """A one-line status on stderr, redrawn at most a few times a second and wiped when done."""

    def __init__(self) -> None:
        self.last = 0.0
        self.shown = False

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last >= 0.2:
            self.last, self.shown = now, True
            sys.stderr.write(f"\r\033[Kmaskc verify: {message}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _witness_dict(witness: Witness | None) -> dict[str, Any] | None:
    if witness is None:
        return None
    return {
        "query": witness.positions[-1],
        "key": witness.positions[0],
        "layers": witness.layers,
        "positions": list(witness.positions),
    }


def _witness_lines(report: Report, witness: Witness | None, i: int, j: int) -> list[str]:
    if witness is None:
        return [f"no path: key {j}'s information never reaches query {i}"]
    lines = witness.lines()
    if witness.layers > report.layers:
        within = f"{report.layers} layer{'s' if report.layers != 1 else ''}"
        lines.insert(0, f"not within {within}; the shortest path needs {witness.layers}:")
    return lines


def _default_layers(args: argparse.Namespace) -> tuple[int, str | None]:
    """--layers, or one cycle of the spec's schedule (with a note saying so)."""
    if args.layers is not None:
        return args.layers, None
    spec = load(args.spec)
    if not spec.layers:
        raise ArgumentError("the spec has no `layers:` schedule; pass --layers L (the model depth)", argument="layers")
    depth = sum(entry.count for entry in spec.layers)
    return depth, f"layers         {depth}: one cycle of the spec's schedule (--layers L to choose)"


def run(args: argparse.Namespace) -> int:
    layers, note = _default_layers(args)
    progress = StderrProgress() if sys.stderr.isatty() else None
    try:
        documents, seq_len = documents_and_seq_len(args)
        report = verify(
            args.spec, layers, seq_len=seq_len, block_size=args.block_size, progress=progress, documents=documents
        )
        witness = report.path(*args.path, unbounded=True) if args.path else None
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        data = report.as_dict()
        if args.path:
            data["path"] = _witness_dict(witness)
        print(json.dumps(data))
    else:
        print("\n".join(report.lines()))
        if note:
            print(note)
        if args.path:
            print("\n".join(_witness_lines(report, witness, *args.path)))
    return 0 if report.reachable else 1
