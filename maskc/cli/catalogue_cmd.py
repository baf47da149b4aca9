"""`maskc catalogue`: every spec in specs/ side by side; `--markdown` for the README's generated block."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskc.catalogue import catalogue, markdown_table, readme_block, replace_block, text_table
from maskc.cli.options import positive_int
from maskc.errors import MaskcError

NAME = "catalogue"
HELP = "table of the specs in specs/: source, density, FLOPs against dense, min_layers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq-len", type=positive_int, help="one n for every spec (default: each spec's own)")
    parser.add_argument("--dir", type=Path, help="folder of spec files (default: the specs installed with maskc)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--markdown", action="store_true", help="print the README block (markdown, with markers)")
    output.add_argument("--update", metavar="FILE", type=Path, help="rewrite the catalogue block of FILE in place")
    output.add_argument(
        "--check", metavar="FILE", type=Path, help="exit 1 when the catalogue block of FILE is not current"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise MaskcError(f"cannot read {path}: {err.strerror}") from None


def run(args: argparse.Namespace) -> int:
    rows = catalogue(args.dir, args.seq_len)
    if args.update:
        args.update.write_text(replace_block(_read(args.update), markdown_table(rows)), encoding="utf-8")
        print(f"updated the catalogue block of {args.update} ({len(rows)} specs)")
    elif args.check:
        current = readme_block(_read(args.check))
        if current is None:
            raise MaskcError(f"{args.check} has no catalogue block to check")
        if current != markdown_table(rows):
            print(f"{args.check}: the catalogue block is out of date; run `maskc catalogue --update {args.check}`")
            return 1
        print(f"{args.check}: the catalogue block is current ({len(rows)} specs)")
    elif args.markdown:
        print(markdown_table(rows))
    else:
        print(text_table(rows))
    sys.stdout.flush()
    return 0
