"""`maskc explain SPEC`: parts, density, complexity class, closest catalogue pattern, and warnings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from maskc.cli.options import add_documents_argument, documents_and_seq_len, positive_int
from maskc.explain import explain
from maskc.loader import load

NAME = "explain"
HELP = "explain a spec: what it is made of, density, complexity, closest catalogue pattern, warnings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="spec file (YAML)")
    parser.add_argument("--seq-len", type=positive_int, help="sequence length n (default: the spec's)")
    parser.add_argument(
        "--layers", type=positive_int, metavar="L", help="model depth to check reach for (default: the spec's schedule)"
    )
    add_documents_argument(parser)
    parser.add_argument("--seed", type=int, help="resolve clusters and top-k from random q and k drawn with this seed")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def run(args: argparse.Namespace) -> int:
    documents, seq_len = documents_and_seq_len(args)
    report = explain(
        load(args.spec),
        seq_len=seq_len,
        layers=args.layers,
        source=Path(args.spec),
        documents=documents,
        seed=args.seed,
    )
    print(json.dumps(report.to_json(), indent=2) if args.json else "\n".join(report.lines()))
    return 0
