"""`maskc check SPEC`: validate a spec file (and compile it when it declares seq_len)."""

from __future__ import annotations

import argparse

from maskc.compiler import compile, compile_layers
from maskc.errors import SpecError
from maskc.loader import load, locate

NAME = "check"
HELP = "validate a spec file; exit 0 when it is valid, 2 with the reason when not"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="spec file (YAML)")


def run(args: argparse.Namespace) -> int:
    spec = load(args.spec)
    detail = ""
    if spec.seq_len is not None:
        try:
            pattern = compile(spec)
            if any(entry.pattern is not None for entry in spec.layers):
                compile_layers(spec)  # the layers' own patterns must compile at seq_len too
        except SpecError as err:
            raise locate(err, args.spec) from None
        detail = f", compiles at n = {pattern.n} ({len(pattern.layouts)} distinct pattern(s))"
    print(f"{args.spec}: ok: {spec.name}{detail}")
    return 0
