"""The explorer's web server: the standard library's threading HTTP server, one page, a JSON API.

GET / serves the page (static/index.html, package data); GET /api/start gives the spec to open with;
POST /api/mask, /api/analysis and /api/reach compute (maskc.explore.api). The server outlives any
request: bodies over MAX_BODY are refused unread, bad JSON is a 400, other methods a 405, unknown
paths a 404, and an unexpected failure a 500 with a message, each as a JSON object.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from maskc.errors import MaskcWarning
from maskc.explore import api
from maskc.loader import MAX_SPEC_BYTES

#: Largest request body read: a spec at its size limit, written out as JSON, with room to spare.
MAX_BODY = 4 * MAX_SPEC_BYTES
#: Seconds a connection may stay silent before the server drops it.
SOCKET_TIMEOUT = 30

Endpoint = Callable[[Any, str], tuple[int, dict[str, Any]]]
ENDPOINTS: dict[str, Endpoint] = {"/api/mask": api.mask, "/api/analysis": api.analysis, "/api/reach": api.reach}


def page() -> bytes:
    """The explorer page, shipped as package data."""
    return resources.files("maskc.explore").joinpath("static/index.html").read_bytes()


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the spec it opened with and how to name it in errors."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], start_text: str, source: str, quiet: bool = True) -> None:
        super().__init__(address, ExplorerHandler)
        self.start_text = start_text
        self.source = source
        self.quiet = quiet
        self.page = page()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class ExplorerHandler(BaseHTTPRequestHandler):
    server: ExplorerServer
    timeout = SOCKET_TIMEOUT
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode("utf-8"), "application/json; charset=utf-8", extra)

    def _fail(self, status: HTTPStatus, message: str, extra: dict[str, str] | None = None) -> None:
        self._json(status, {"ok": False, "error": {"message": message, "line": None, "path": None}}, extra)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/start":
            text = self.server.start_text
            self._json(HTTPStatus.OK, {"yaml": text, "source": self.server.source, "n": api.start_n(text), **_limits()})
        elif path in ENDPOINTS:
            self._fail(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST", {"Allow": "POST"})
        else:
            self._fail(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    do_HEAD = do_GET  # noqa: N815 (http.server looks up do_<METHOD>)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            self.close_connection = True  # the body is left unread
            allowed = {"Allow": "GET, HEAD"} if path in ("/", "/index.html", "/api/start") else None
            status = HTTPStatus.METHOD_NOT_ALLOWED if allowed else HTTPStatus.NOT_FOUND
            self._fail(status, f"{path} does not take POST" if allowed else f"no such endpoint: {path}", allowed)
            return
        request = self._read_json()
        if request is None:
            return
        try:
            status, body = endpoint(request, self.server.source)
        except api.RequestError as err:
            self._fail(HTTPStatus.BAD_REQUEST, str(err))
            return
        except Exception as err:  # a bug must not take the server down: report it and carry on
            traceback.print_exc(file=sys.stderr)
            self._fail(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(err).__name__}: {err}")
            return
        self._json(status, body)

    def _read_json(self) -> Any:
        """The request body as JSON, or None after answering with the reason it cannot be read."""
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length_text is None:
            self.close_connection = True
            self._fail(HTTPStatus.LENGTH_REQUIRED, "a POST body needs a Content-Length")
            return None
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._fail(HTTPStatus.BAD_REQUEST, f"bad Content-Length: {length_text!r}")
            return None
        if length > MAX_BODY:
            self.close_connection = True
            self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body of {length} bytes is over {MAX_BODY}")
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            self._fail(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {err}")
            return None

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._fail(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not supported here", {"Allow": "GET, HEAD, POST"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815


def _limits() -> dict[str, int]:
    return {
        "max_n": api.MAX_N,
        "reach_n": api.REACH_N,
        "max_reach_n": api.MAX_REACH_N,
        "max_layers": api.MAX_LAYERS,
        "mask_cells": api.MASK_CELLS,
    }


def make_server(start_text: str, source: str, host: str = "127.0.0.1", port: int = 0, quiet: bool = True) -> Any:
    """A server bound to host:port (0: any free port), not yet serving."""
    # Empty rows are reported on the page among the warnings, not printed by every compile.
    warnings.filterwarnings("ignore", category=MaskcWarning)
    return ExplorerServer((host, port), start_text, source, quiet)


@contextmanager
def serving(start_text: str, source: str, host: str = "127.0.0.1", port: int = 0) -> Iterator[ExplorerServer]:
    """A server answering on a daemon thread for the duration of the block (tests, benchmarks)."""
    server = make_server(start_text, source, host, port)
    thread = threading.Thread(target=server.serve_forever, name="maskc-explore", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
