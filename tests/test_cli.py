"""The `maskc` command through real subprocesses: summaries, saved IR, and exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from clitools import run_cli, write_spec

import maskc

LONGFORMER = """\
name: longformer-test
seq_len: 4096
pattern:
  - window: {before: 256, after: 256}
  - global: {tokens: [0]}
"""


def test_compile_prints_summary_and_saves(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, LONGFORMER)
    out = tmp_path / "ir.npz"
    result = run_cli("compile", spec, "--seq-len", "4096", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "tiles          64 x 64" in result.stdout
    assert "FLOPs vs dense" in result.stdout and "memory" in result.stdout
    loaded = maskc.CompiledPattern.load(out)
    fresh = maskc.compile(spec)
    assert np.array_equal(loaded.to_dense(), fresh.to_dense())
    assert np.array_equal(loaded.layouts[0].full, fresh.layouts[0].full)


def test_compile_warns_when_tiles_are_mostly_masked_out(tmp_path: Path) -> None:
    """A stride lights every tile for one diagonal: the summary says block sparsity will not pay."""
    strided = "name: strided\nseq_len: 1024\npattern: {stride: {every: 64}}\n"
    result = run_cli("compile", write_spec(tmp_path, strided))
    assert result.returncode == 0, result.stderr
    assert "warning        the stored tiles hold 64.0x the active pairs" in result.stdout
    assert "1.00x dense work for 1.56% of the pairs" in result.stdout
    assert "warning" not in run_cli("compile", write_spec(tmp_path, LONGFORMER)).stdout


def test_compile_json_and_block_size(tmp_path: Path) -> None:
    result = run_cli("compile", write_spec(tmp_path, LONGFORMER), "--block-size", "128x64", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["block_m"], summary["block_n"], summary["n"]) == (128, 64, 4096)
    exact = (np.abs(np.arange(4096)[:, None] - np.arange(4096)[None, :]) <= 256).sum() + 2 * 4096 - 2 - 2 * 256
    assert summary["active_pairs"] == exact


def test_check_ok(tmp_path: Path) -> None:
    result = run_cli("check", write_spec(tmp_path, LONGFORMER))
    assert result.returncode == 0 and "ok" in result.stdout


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_bad_inputs_exit_2_without_traceback(tmp_path: Path) -> None:
    unknown = write_spec(tmp_path, "name: x\nseq_len: 64\npattern:\n  - windo: {size: 4}\n", "unknown.yaml")
    assert_clean_failure(run_cli("check", unknown), "unknown.yaml:4", "did you mean 'window'")
    not_yaml = write_spec(tmp_path, "name: [x\n", "broken.yaml")
    assert_clean_failure(run_cli("compile", not_yaml), "broken.yaml", "not valid YAML")
    token = write_spec(tmp_path, "name: x\npattern: {global: {tokens: [70]}}\n", "token.yaml")
    assert_clean_failure(
        run_cli("compile", token, "--seq-len", "64"), "token.yaml:2: pattern.global.tokens", "not below seq_len 64"
    )
    good = write_spec(tmp_path, LONGFORMER, "good.yaml")
    assert_clean_failure(run_cli("compile", good, "--out", str(tmp_path / "no" / "such" / "dir.npz")), "cannot write")
    assert_clean_failure(run_cli("compile", str(tmp_path / "missing.yaml")), "cannot read spec file")
    assert_clean_failure(run_cli("compile", token, "--seq-len", "-3"), "--seq-len")
    assert_clean_failure(run_cli("compile", token, "--seq-len", "128", "--block-size", "48"), "powers of two")
    no_n = write_spec(tmp_path, "name: x\npattern: {dense: {}}\n", "no_n.yaml")
    assert_clean_failure(run_cli("compile", no_n), "no sequence length")
