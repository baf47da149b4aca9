"""`maskc explore [SPEC]`: the interactive pattern explorer, a local web page."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path

from maskc.catalogue import catalogue_dir
from maskc.errors import MaskcError, SpecError
from maskc.explore.server import make_server
from maskc.loader import MAX_SPEC_BYTES

NAME = "explore"
HELP = "compose a pattern in the browser and watch its mask, numbers, reach and recognised model"
#: The spec the page opens with when none is given.
DEFAULT_SPEC = "longformer.yaml"


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0 … 65535, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec", metavar="SPEC", nargs="?", help=f"spec file to open (default: the catalogue's {DEFAULT_SPEC})"
    )
    parser.add_argument("--port", type=port_number, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--no-browser", action="store_true", help="print the URL without opening a browser")
    parser.add_argument("--log", action="store_true", help="log every request to stderr")


def _start_text(spec: str | None) -> tuple[str, str]:
    """The text the page opens with and the file name its errors carry. The file may hold a bad spec:
    the page shows its located error, as it does for one typed in."""
    path = Path(spec) if spec else catalogue_dir() / DEFAULT_SPEC
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(f"spec file is over the {MAX_SPEC_BYTES}-byte limit", source=str(path))
        return path.read_text(encoding="utf-8"), path.name
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read spec file: {err}", source=str(path)) from None


def run(args: argparse.Namespace) -> int:
    text, source = _start_text(args.spec)
    try:
        server = make_server(text, source, host=args.host, port=args.port, quiet=not args.log)
    except OSError as err:
        raise MaskcError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    print(f"maskc explore: serving {source} at {server.url}  (Ctrl-C stops)", flush=True)
    if not args.no_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
