"""`maskc show SPEC --seq-len N`: the mask as text for small n, or as a PNG; `--reach L` for layer counts."""

from __future__ import annotations

import argparse

from maskc.cli.options import add_documents_argument, add_spec_arguments, documents_and_seq_len, positive_int
from maskc.compiler import as_spec, compile
from maskc.draw import ascii_mask, ascii_reach, mask_png, reach_png
from maskc.draw_grid import ascii_query, query_png

NAME = "show"
HELP = "draw the mask (text for small n, or --png FILE), coloured by the primitive that lit each cell"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    add_documents_argument(parser)
    parser.add_argument(
        "--seed", type=int, help="draw clusters and top-k as resolved from random q and k drawn with this seed"
    )
    parser.add_argument("--png", metavar="FILE", help="write a picture: one panel per distinct pattern, with a legend")
    parser.add_argument(
        "--reach",
        type=positive_int,
        metavar="L",
        help="instead of the mask, show how many layers (up to L) key j needs to reach query i",
    )
    parser.add_argument(
        "--query",
        metavar="Q",
        help="a grid spec: draw on the canvas the keys that query Q attends (coordinates 5,7 or t,5,7, or a position)",
    )


def run(args: argparse.Namespace) -> int:
    spec = as_spec(args.spec)
    documents, seq_len = documents_and_seq_len(args)
    n = compile(spec, seq_len=seq_len, block_size=args.block_size).n
    if args.query is not None:
        print(query_png(spec, args.query, args.png) if args.png else ascii_query(spec, args.query))
    elif args.reach is not None:
        print(reach_png(spec, n, args.reach, args.png) if args.png else ascii_reach(spec, n, args.reach))
    elif args.png:
        print(mask_png(spec, n, args.png, args.block_size, documents, args.seed))
    else:
        print(ascii_mask(spec, n, args.block_size, documents, args.seed))
    return 0
