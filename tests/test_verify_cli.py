"""`maskc verify` through real subprocesses: exit codes, the text and JSON reports, paths, bad input."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from clitools import run_cli, write_spec

WINDOW = """\
name: window-32
seq_len: 5001
pattern:
  window: {size: 32}
"""

LONGFORMER = """\
name: longformer-small
seq_len: 2048
pattern:
  - window: {before: 64, after: 64}
  - global: {tokens: [0]}
"""

DILATED = """\
name: dilated
seq_len: 512
pattern:
  window: {before: 8, after: 8, dilation: 2}
"""


def run_verify(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("verify", *args)


def test_proof_exits_0_with_the_report(tmp_path: Path) -> None:
    result = run_verify(write_spec(tmp_path, LONGFORMER), "--layers", "2", "--path", "2047", "100")
    assert result.returncode == 0, result.stderr
    assert "PROVEN" in result.stdout and "min_layers     2" in result.stdout
    assert "n = 2048, L = 2" in result.stdout
    assert "key 100 reaches query 2047 in 2 layers:" in result.stdout
    assert "0 attends 100" in result.stdout and "2047 attends 0" in result.stdout
    assert result.stderr == "", "no progress output when stderr is not a terminal"


def test_refutation_exits_1_with_a_counterexample(tmp_path: Path) -> None:
    result = run_verify(write_spec(tmp_path, WINDOW), "--layers", "24", "--path", "5000", "0")
    assert result.returncode == 1, result.stderr
    assert "REFUTED" in result.stdout and "min_layers     313" in result.stdout
    assert "counterexample key 0 does not reach query 5000 within 24 layers" in result.stdout
    assert "key 0's information reaches 385 positions: 0 … 384" in result.stdout
    assert "not within 24 layers; the shortest path needs 313:" in result.stdout


def test_json_is_exactly_one_object(tmp_path: Path) -> None:
    result = run_verify(write_spec(tmp_path, DILATED), "--layers", "8", "--json", "--path", "1", "0")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["seq_len"] == 512 and report["layers"] == 8
    assert report["reachable"] is False and report["min_layers"] is None
    i, j = report["counterexample"]
    assert (i - j) % 2 == 1
    assert report["dynamic_ignored"] is False
    assert report["path"] is None
    proven = run_verify(write_spec(tmp_path, LONGFORMER), "--layers", "3", "--json", "--seq-len", "1024")
    assert proven.returncode == 0, proven.stderr
    data = json.loads(proven.stdout)
    assert (data["seq_len"], data["reachable"], data["min_layers"], data["counterexample"]) == (1024, True, 2, None)


def test_text_says_never(tmp_path: Path) -> None:
    result = run_verify(write_spec(tmp_path, DILATED), "--layers", "8", "--path", "1", "0")
    assert result.returncode == 1
    assert "min_layers     never" in result.stdout
    assert "no path: key 0's information never reaches query 1" in result.stdout


def test_bad_input_exits_2_without_traceback(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, WINDOW)
    cases = [
        (str(tmp_path / "missing.yaml"), "--layers", "2"),
        (spec, "--layers", "2", "--path", "5001", "0"),
        (spec, "--layers", "0"),
        (write_spec(tmp_path, "name: x\npattern: {window: {size: -1}}\n", "bad.yaml"), "--layers", "2"),
        (write_spec(tmp_path, "name: x\npattern: {window: {size: 4}}\n", "no_n.yaml"), "--layers", "2"),
    ]
    for args in cases:
        result = run_verify(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.strip(), args


def test_progress_goes_to_a_terminal(tmp_path: Path) -> None:
    """On a terminal, stderr shows where the search stands (and is wiped when it ends)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "maskc", "verify", write_spec(tmp_path, WINDOW), "--layers", "4"],
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    out, _ = proc.communicate(timeout=120)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.returncode == 1 and "REFUTED" in out
    assert b"maskc verify: preparing" in shown and b"\r\x1b[K" in shown
