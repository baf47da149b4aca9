"""The `maskc` command. Each subcommand lives in its own module `maskc/cli/<name>_cmd.py`.

A command module defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
Errors a user can fix (MaskcError) print one line to stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import pkgutil
import sys
import warnings
from importlib import import_module
from types import ModuleType

from maskc.errors import ArgumentError, MaskcError, SpecError


def _command_modules() -> list[ModuleType]:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd"))
    return [import_module(f"{__name__}.{name}") for name in names]


def build_parser() -> argparse.ArgumentParser:
    from maskc import __version__

    parser = argparse.ArgumentParser(prog="maskc", description="Declarative sparse-attention mask compiler.")
    parser.add_argument("--version", action="version", version=f"maskc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def _print_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Warnings as one plain line (`maskc: warning: …`), not Python's file-and-line form."""
    print(f"maskc: warning: {message}", file=sys.stderr)


def _message(err: MaskcError, args: argparse.Namespace) -> str:
    """The error as the command line sees it: a flag by its name, a spec error with its file and line."""
    if isinstance(err, ArgumentError):
        return err.as_flag()
    if isinstance(err, SpecError) and err.source is None and isinstance(getattr(args, "spec", None), str):
        from maskc.loader import locate

        return str(locate(err, args.spec))
    return str(err)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _print_warning
    try:
        code = int(args.handler(args))
        sys.stdout.flush()
        return code
    except MaskcError as err:
        print(f"maskc {args.command}: error: {_message(err, args)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`maskc show … | head`): stop quietly, and keep Python's exit-time
        # flush of stdout from failing again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("maskc: interrupted", file=sys.stderr)
        return 130
