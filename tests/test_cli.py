"""The `maskc` command through real subprocesses: summaries, saved IR, and exit code 2 on bad input."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from clitools import ROOT, run_cli, write_spec

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


#: What each command may import: none of them loads torch, Triton or matplotlib, and only
#: `compile` (its summary plans the schedule, through scipy.sparse) loads scipy.
_LIGHT_COMMANDS = {
    ("--version",): set(),
    ("check", "specs/longformer.yaml"): {"scipy"},
    ("compile", "specs/longformer.yaml", "--json"): set(),
    ("verify", "specs/longformer.yaml"): {"scipy"},
    ("plan", "specs/longformer.yaml", "--ranks", "4"): {"scipy"},
}


def test_commands_import_only_what_they_need() -> None:
    """`maskc --version`, `check`, `compile --json`: no torch, Triton or matplotlib (the import alone
    took seconds); `import maskc` stays lazy until a name that needs torch is used."""
    for argv, not_loaded in _LIGHT_COMMANDS.items():
        code = (
            "import sys, contextlib, io\nimport maskc.cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        code = maskc.cli.main(sys.argv[1:])\n    except SystemExit as exit_:\n"
            "        code = exit_.code\n"
            "print(code, sorted(m for m in ('torch', 'triton', 'matplotlib', 'scipy') if m in sys.modules))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300, cwd=ROOT
        )
        assert result.returncode == 0, result.stderr
        exit_code, loaded = result.stdout.split(" ", 1)
        assert exit_code == "0", (argv, result.stdout, result.stderr)
        loaded_modules = set(ast.literal_eval(loaded))
        assert not loaded_modules & {"torch", "triton", "matplotlib"}, (argv, loaded_modules)
        assert not loaded_modules & not_loaded, (argv, loaded_modules)


def test_lazy_package_names() -> None:
    """Every name in maskc.__all__ loads on first use, submodules by their names (`maskc.limits`, as
    errors name it), and a function named like its module (`maskc.attention`, `maskc.verify`)
    stays the function after its module is imported."""
    code = (
        "import sys, maskc\nassert 'torch' not in sys.modules\n"
        "import maskc.nn, maskc.verify, maskc.recognise, maskc.attention\n"
        "from maskc import *\n"
        "missing = [n for n in maskc.__all__ if not hasattr(maskc, n)]\n"
        "assert not missing, missing\n"
        "assert callable(maskc.attention) and callable(maskc.verify) and callable(maskc.recognise)\n"
        "assert maskc.hf.__name__ == 'maskc.hf' and maskc.nn.__name__ == 'maskc.nn'\n"
        "assert set(maskc.__all__) <= set(dir(maskc))\n"
        "assert not {'sys', 'importlib', 'Any', 'TYPE_CHECKING'} & set(dir(maskc))\n"
        "assert maskc.limits.MAX_HEADS > 0 and maskc.schedule.__name__ == 'maskc.schedule'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.stdout.strip() == "ok", result.stderr
