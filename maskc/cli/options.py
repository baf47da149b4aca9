"""Argument types shared by the subcommands, so every command reads them the same way."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from maskc.documents import ids_from_lengths
from maskc.errors import DocumentsError


def positive_int(text: str) -> int:
    """A whole number ≥ 1 (argparse turns the ValueError into a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        digits = text.strip().lstrip("+-").replace("_", "")
        limit = sys.get_int_max_str_digits()
        if digits.isascii() and digits.isdecimal() and limit and len(digits) > limit:  # past int()'s limit
            raise argparse.ArgumentTypeError(f"a whole number of {len(digits)} digits is past every limit") from None
        shown = text if len(text) <= 60 else text[:60] + "…"
        raise argparse.ArgumentTypeError(f"expected a whole number, got {shown!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {value}")
    return value


def tile_size(text: str) -> int | tuple[int, int]:
    """One tile side (`64`) or BLOCK_MxBLOCK_N (`128x64`)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected B or BMxBN, got {text!r}")
    sides = [positive_int(p) for p in parts]
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def add_spec_arguments(parser: argparse.ArgumentParser, *, seq_len_required: bool = False) -> None:
    """SPEC, --seq-len and --block-size, as every command that compiles takes them."""
    parser.add_argument("spec", metavar="SPEC", help="spec file (YAML)")
    parser.add_argument(
        "--seq-len", type=positive_int, required=seq_len_required, help="sequence length n (default: the spec's)"
    )
    parser.add_argument("--block-size", type=tile_size, help="IR tile: B or BMxBN (default: the spec's block_size)")


def lengths(text: str) -> list[int]:
    """Comma-separated document lengths: `4096,8192,…`."""
    return [positive_int(part.strip()) for part in text.split(",")]


def add_documents_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--documents",
        type=lengths,
        metavar="L1,L2,...",
        help="document lengths of a packed sequence, for patterns with document parts (they sum to seq_len)",
    )


def documents_and_seq_len(args: argparse.Namespace) -> tuple[Any, int | None]:
    """(document ids or None, seq_len): the lengths' sum is the seq_len unless --seq-len says otherwise."""
    if args.documents is None:
        return None, args.seq_len
    total = sum(args.documents)
    if args.seq_len is not None and args.seq_len != total:
        raise DocumentsError(f"--documents lengths sum to {total}, but --seq-len is {args.seq_len}")
    return ids_from_lengths(args.documents), total
