"""The explorer's HTTP server outlives malformed requests; `maskc explore` serves the page and prints its URL."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from clitools import ROOT, run_cli, write_spec

from maskc.explore import server as explore_server
from maskc.explore.server import MAX_BODY, serving

SPEC = "name: w\nseq_len: 128\npattern: {window: {before: 4, after: 4}}\n"


@pytest.fixture(scope="module")
def server() -> Iterator[explore_server.ExplorerServer]:
    with serving(SPEC, "w.yaml") as running:
        yield running


def request(
    server: explore_server.ExplorerServer, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def post_json(server: explore_server.ExplorerServer, path: str, payload: object) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    status, _, body = request(server, "POST", path, json.dumps(payload).encode(), **headers)
    return status, json.loads(body)


def read_until_closed(raw: socket.socket) -> str:
    chunks = []
    while chunk := raw.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


def still_serving(server: explore_server.ExplorerServer) -> None:
    status, body = post_json(server, "/api/mask", {"yaml": SPEC})
    assert status == 200 and body["ok"] and body["n"] == 128


def test_page_and_start(server: explore_server.ExplorerServer) -> None:
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"<title>maskc explore</title>" in body
    assert b"http://" not in body.replace(b"http://www.w3.org", b"")  # nothing fetched from the network
    status, _, body = request(server, "GET", "/api/start")
    start = json.loads(body)
    assert status == 200 and start["yaml"] == SPEC and start["source"] == "w.yaml" and start["n"] == 128


def test_all_three_endpoints(server: explore_server.ExplorerServer) -> None:
    for path, extra in (("/api/mask", {}), ("/api/analysis", {}), ("/api/reach", {"n": 128, "layers": 3})):
        status, body = post_json(server, path, {"yaml": SPEC, **extra})
        assert status == 200 and body["ok"], (path, body)


def test_bad_spec_is_422_with_its_line(server: explore_server.ExplorerServer) -> None:
    status, body = post_json(server, "/api/mask", {"yaml": "name: w\npattern: {windw: {}}\n", "n": 64})
    assert status == 422 and body["error"]["line"] == 2 and body["error"]["message"].startswith("w.yaml:2: pattern")


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{not json", 400), (b"\xff\xfe", 400), (b"[1, 2]", 400), (b'{"yaml": 5}', 400), (b'{"n": 3}', 400)],
)
def test_malformed_bodies(server: explore_server.ExplorerServer, body: bytes, status: int) -> None:
    got, headers, answer = request(server, "POST", "/api/mask", body)
    assert got == status and headers["Content-Type"].startswith("application/json")
    assert json.loads(answer)["ok"] is False
    still_serving(server)


def test_huge_body_is_refused_unread(server: explore_server.ExplorerServer) -> None:
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as raw:
        raw.sendall(f"POST /api/mask HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        raw.sendall(b"x" * 65536)
        answer = read_until_closed(raw)
    assert answer.startswith("HTTP/1.1 413") and f"over {MAX_BODY}" in answer
    still_serving(server)


def test_body_without_length_is_refused(server: explore_server.ExplorerServer) -> None:
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as raw:
        raw.sendall(b"POST /api/mask HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        assert raw.recv(65536).startswith(b"HTTP/1.1 411")
    status, _, _ = request(server, "POST", "/api/mask", b"{}", **{"Content-Length": "-5"})
    assert status == 400
    still_serving(server)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/../../etc/passwd", 404),
        ("POST", "/nowhere", 404),
        ("GET", "/api/mask", 405),
        ("POST", "/", 405),
        ("PUT", "/api/mask", 405),
        ("DELETE", "/", 405),
        ("PATCH", "/api/reach", 405),
    ],
)
def test_wrong_methods_and_paths(server: explore_server.ExplorerServer, method: str, path: str, status: int) -> None:
    got, headers, body = request(server, method, path, b"{}" if method != "GET" else None)
    assert got == status and json.loads(body)["ok"] is False
    if status == 405:
        assert "Allow" in headers
    still_serving(server)


def test_a_failing_computation_is_a_500_not_a_dead_server(
    server: explore_server.ExplorerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: object, source: str) -> tuple[int, dict]:
        raise RuntimeError("a bug")

    monkeypatch.setitem(explore_server.ENDPOINTS, "/api/analysis", broken)
    status, body = post_json(server, "/api/analysis", {"yaml": SPEC})
    assert status == 500 and "RuntimeError: a bug" in body["error"]["message"]
    still_serving(server)


def test_cli_serves_the_page_and_prints_its_url(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    command = [sys.executable, "-m", "maskc", "explore", spec, "--port", "0", "--no-browser"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        with urllib.request.urlopen(url.group(0) + "api/start", timeout=30) as response:
            assert json.loads(response.read())["yaml"] == SPEC
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_cli_errors_exit_2(tmp_path: Path) -> None:
    result = run_cli("explore", str(tmp_path / "missing.yaml"), "--no-browser")
    assert result.returncode == 2 and "cannot read spec file" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("explore", "--port", "70000", "--no-browser")
    assert result.returncode == 2 and "port" in result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("explore", "--port", str(taken.getsockname()[1]), "--no-browser")
    assert result.returncode == 2 and "cannot listen on" in result.stderr and "Traceback" not in result.stderr
