"""`maskc compile SPEC --seq-len N`: print the IR's summary, optionally save it or emit kernel source."""

from __future__ import annotations

import argparse
import json

from maskc import limits
from maskc.cli.options import add_spec_arguments, positive_int
from maskc.compiler import compile
from maskc.schedule import SCHEDULE_MODES, schedule_lines, schedule_of, schedule_summary

NAME = "compile"
HELP = "compile a spec to the block-sparse IR and print blocks, density, FLOPs and memory against dense"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_spec_arguments(parser)
    parser.add_argument("--heads", type=positive_int, help="number of heads (default: the spec's, or 1)")
    parser.add_argument("--out", help="save the IR to this file (.npz)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--emit", choices=["triton"], help="print the generated kernel source instead")
    parser.add_argument(
        "--schedule",
        choices=SCHEDULE_MODES,
        default="auto",
        help="how the kernels run it: one pass in token order (single), the cost model's passes (auto, the "
        "default), or every lowering taken (split)",
    )


def run(args: argparse.Namespace) -> int:
    pattern = compile(
        args.spec, seq_len=args.seq_len, block_size=args.block_size, heads=args.heads, schedule=args.schedule
    )
    if args.emit:
        from maskc.registry import get_backend

        print(get_backend(args.emit).source(pattern))
        return 0
    stats = pattern.stats()
    if args.json:
        planned = pattern.n <= limits.MAX_SCHEDULE_SEQ_LEN
        summary = schedule_summary(pattern, schedule_of(pattern)) if planned else {"passes": None}
        print(json.dumps({**stats.as_dict(), **summary}))
    else:
        print("\n".join(stats.lines()))
        for k, layout in enumerate(pattern.layouts):
            print(f"rule [{k}]       {layout.rule.describe()}")
        if pattern.n <= limits.MAX_SCHEDULE_SEQ_LEN:
            print("\n".join(schedule_lines(pattern, schedule_of(pattern))))
        else:
            limit = limits.MAX_SCHEDULE_SEQ_LEN
            print(f"schedule       not planned above n = {limit:,} (maskc.limits.MAX_SCHEDULE_SEQ_LEN)")
        if any(entry.pattern is not None for entry in pattern.spec.layers):
            print(
                "layers         some layers have patterns of their own; this is the top-level pattern "
                "(`maskc catalogue` averages over the schedule, `maskc.compile_layers` compiles each)"
            )
    if args.out:
        pattern.save(args.out)
        if not args.json:
            print(f"saved          {args.out}")
    return 0
