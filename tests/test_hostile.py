"""Hostile inputs: each ends within seconds of CPU and a few GiB with a located error (exit 2) or a
correct answer, never a hang, a memory blow-up or a traceback.

The cases run in two subprocesses (tests/hostile_runner.py) under RLIMIT_AS, each case under a
wall-clock alarm; a case is bounded by the CPU seconds it used, which a busy machine does not inflate.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from clitools import ROOT

#: Address-space limit of the runner processes.
MEMORY_LIMIT = 3 << 30
#: CPU seconds one case may use, and the cases allowed more (the largest n takes about 10 s).
CPU_LIMIT = 15.0
CPU_LIMIT_OF = dict.fromkeys(
    [
        "max_seq_len_large_tiles",
        "verify_max_seq_len",
        "show_png_max_seq_len",
        "emit_triton_token_list_max_seq_len",
        "check_token_list_max_seq_len",
    ],
    40.0,
)

BIG = 10**23


def _spec(body: str) -> str:
    return "name: hostile\n" + body


def _deep(levels: int) -> str:
    return _spec("pattern: " + "{union: [" * levels + "{dense: {}}" + "]}" * levels + "\n")


#: A schedule of three kinds of layer (window, recurrent, stride) that connects every pair in 11 layers.
_MIXED_SCHEDULE = _spec(
    "seq_len: 4096\npattern: {window: {size: 2}}\nlayers:\n  - {count: 3}\n  - {count: 1, mixer: recurrent}\n"
    "  - count: 2\n    pattern: {stride: {every: 64}}\n"
)

#: 31 distinct patterns for the head_patterns cases: 30 windows and dense.
_HEAD_PATTERNS = [f"{{window: {{size: {2 * k + 2}}}}}" for k in range(30)] + ["{dense: {}}"]

#: id → (spec text or None, argv after the command with SPEC for the file, expected exit, stderr regex or None)
CLI_CASES: dict[str, tuple[str | None, list[str], int, str | None]] = {
    "max_seq_len_window": (
        _spec("seq_len: 2147483647\npattern: {window: {size: 8}}\n"),
        ["check", "SPEC"],
        2,
        r"maskc\.limits\.MAX_TILE_ROWS.*--block-size",
    ),
    "max_seq_len_large_tiles": (
        _spec("seq_len: 2147483647\npattern: {window: {size: 8}}\n"),
        ["compile", "SPEC", "--block-size", "1024", "--json"],
        0,
        None,
    ),
    "show_png_max_seq_len": (
        _spec("seq_len: 2147483647\npattern: {window: {size: 8}}\n"),
        ["show", "SPEC", "--block-size", "1024", "--png", "PNG"],
        0,
        None,
    ),
    "emit_triton_token_list_max_seq_len": (
        _spec(
            "seq_len: 2147483647\nblock_size: 1024\n"
            "pattern:\n  - window: {before: 256, after: 256}\n"
            "  - global: {tokens: [0, 5, 70000, 9000000, 2147483646]}\n"
        ),  # five runs: more than a predicate compares (emit.RUNS_AS_COMPARISONS), so a lookup
        ["compile", "SPEC", "--emit", "triton"],
        0,
        None,
    ),
    "check_token_list_max_seq_len": (
        _spec(
            "seq_len: 2147483647\nblock_size: 1024\nheads: 12\n"
            "pattern:\n  - window: {before: 256, after: 256}\n  - global: {tokens: [0, 5, 70000, 2147483646]}\n"
        ),
        ["check", "SPEC"],
        0,
        None,
    ),
    "verify_max_seq_len": (
        _spec("seq_len: 2147483647\nblock_size: 1024\npattern: {window: {size: 8}}\n"),
        ["verify", "SPEC", "--layers", "4"],
        2,
        r"error: proving reach at n = 2147483647: .*maskc\.limits\.MAX_REACH_SEQ_LEN",
    ),
    "explain_past_reach_limit": (
        _spec("seq_len: 4194305\nblock_size: 1024\npattern: {window: {size: 8}}\n"),
        ["explain", "SPEC"],
        2,
        r"error: proving reach at n = 4194305: .*maskc\.limits\.MAX_REACH_SEQ_LEN",
    ),
    "random_token_table_at_max_seq_len": (
        _spec("seq_len: 2147483647\nblock_size: 1024\npattern: {random: {per_row: 8, granularity: token}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:4: pattern\.random\.per_row: .*maskc\.limits\.MAX_RANDOM_ENTRIES",
    ),
    "random_draw_quadratic_in_per_row": (
        _spec("seq_len: 65536\npattern: {random: {per_row: 1000, granularity: token}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:3: pattern\.random\.per_row: .*maskc\.limits\.MAX_RANDOM_WORK",
    ),
    "global_99000_tokens": (
        _spec("seq_len: 100000\npattern: {global: {tokens: [" + ",".join(map(str, range(99_000))) + "]}}\n"),
        ["check", "SPEC"],
        0,
        None,
    ),
    "global_duplicate_tokens": (
        _spec("seq_len: 100000\npattern: {global: {tokens: [" + ",".join(map(str, range(50_000))) + ",7]}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:\d+: pattern\.global: tokens lists \[7\] more than once",
    ),
    "heads_in_spec": (
        _spec("seq_len: 64\nheads: 1000000000000\npattern: {window: {size: 8}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:3: heads: .*maskc\.limits\.MAX_HEADS",
    ),
    "heads_flag": (
        _spec("seq_len: 64\npattern: {window: {size: 8}}\n"),
        ["compile", "SPEC", "--heads", "1000000000"],
        2,
        r"--heads: .*maskc\.limits\.MAX_HEADS",
    ),
    "layer_count": (
        _spec("seq_len: 64\npattern: {window: {size: 8}}\nlayers: [{count: 1000000000000}]\n"),
        ["explain", "SPEC"],
        2,
        r"spec\.yaml:4: layers: .*maskc\.limits\.MAX_SCHEDULE_LAYERS",
    ),
    "explain_65536_heads_5000_head_patterns": (
        _spec(
            "seq_len: 4096\nheads: 65536\npattern: {window: {size: 8}}\nhead_patterns:\n"
            + "".join(f"  - {{heads: [{13 * e}], pattern: {_HEAD_PATTERNS[e % 31]}}}\n" for e in range(5000))
        ),
        ["explain", "SPEC"],
        0,
        None,
    ),
    "cluster_iterations": (
        _spec("seq_len: 64\npattern: {cluster: {clusters: 4, iterations: 1000000000000}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:\d+: pattern\.cluster: .*maskc\.limits\.MAX_CLUSTER_ITERATIONS",
    ),
    "reach_10000": (
        None,
        ["show", "specs/mistral_swa.yaml", "--seq-len", "64", "--reach", "10000"],
        2,
        r"MAX_REACH_LAYERS",
    ),
    "reach_100_stops_early": (None, ["show", "specs/mistral_swa.yaml", "--seq-len", "128", "--reach", "100"], 0, None),
    "reach_never_connects": (
        _spec("seq_len: 128\npattern: {block_local: {size: 16}}\n"),
        ["show", "SPEC", "--reach", "1000"],
        0,
        None,
    ),
    "every_past_int64": (
        _spec(f"seq_len: 64\npattern: {{stride: {{every: {BIG}}}}}\n"),
        ["check", "SPEC"],
        2,
        r"MAX_PARAMETER",
    ),
    "dilation_past_int64": (
        _spec(f"seq_len: 64\npattern: {{window: {{size: 4, dilation: {BIG}}}}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:3: pattern\.window\.dilation: .*MAX_PARAMETER",
    ),
    "size_past_int64": (
        _spec(f"seq_len: 64\npattern: {{window: {{size: {BIG}}}}}\n"),
        ["check", "SPEC"],
        2,
        r"MAX_PARAMETER",
    ),
    "width_past_int64": (
        _spec(f"seq_len: 64\npattern: {{axial: {{width: {BIG}}}}}\n"),
        ["check", "SPEC"],
        2,
        r"MAX_PARAMETER",
    ),
    "global_every_past_int64": (
        _spec(f"seq_len: 64\npattern: {{global: {{every: {BIG}}}}}\n"),
        ["check", "SPEC"],
        2,
        r"MAX_PARAMETER",
    ),
    "expression_past_int64": (
        _spec("seq_len: 4096\npattern: {stride: {every: 'n*n*n*n*n*n*n*n'}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:3: pattern\.stride\.every: .*MAX_PARAMETER",
    ),
    "global_last_residues": (
        _spec("seq_len: 4000000\npattern: {global: {every: 2000000, last: 1999999, direction: columns}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:3: pattern\.global\.last: .*MAX_PATTERN_NODES",
    ),
    "parameters_at_the_limit": (
        _spec(
            "seq_len: 300\npattern:\n"
            f"  - window: {{before: {2**62}, after: {2**62}, dilation: {2**62}}}\n"
            f"  - stride: {{every: {2**62}}}\n  - axial: {{width: {2**62}}}\n"
            f"  - global: {{every: {2**62}, direction: rows}}\n  - block_local: {{size: {2**62}}}\n"
        ),
        ["compile", "SPEC", "--json"],
        0,
        None,
    ),
    "integer_5000_digits": (
        _spec("seq_len: " + "9" * 5000 + "\npattern: {dense: {}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:2: .*a whole number of 5000 digits is past every limit .*MAX_PARAMETER",
    ),
    "spec_block_size": (
        _spec("seq_len: 64\nblock_size: 1048576\npattern: {dense: {}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:3: block_size: .*MAX_TILE_SIDE",
    ),
    "block_size_flag_huge": (
        None,
        ["compile", "specs/longformer.yaml", "--block-size", "65536"],
        2,
        r"--block-size: .*MAX_TILE_SIDE",
    ),
    "block_size_flag_past_n": (
        None,
        ["compile", "specs/longformer.yaml", "--seq-len", "2048", "--block-size", "32768"],
        2,
        r"--block-size: .*MAX_TILE_SIDE",
    ),
    "block_size_flag_1024": (
        None,
        ["compile", "specs/longformer.yaml", "--seq-len", "2048", "--block-size", "1024"],
        0,
        None,
    ),
    "block_size_flag_3": (
        None,
        ["compile", "specs/longformer.yaml", "--block-size", "3"],
        2,
        r"error: --block-size: tile sides must be powers of two",
    ),
    "seq_len_flag_huge": (
        None,
        ["compile", "specs/longformer.yaml", "--seq-len", str(10**12)],
        2,
        r"error: --seq-len: .*MAX_SEQ_LEN",
    ),
    "nesting_130": (_deep(130), ["check", "SPEC"], 2, r"spec\.yaml:2: .*MAX_NESTING_DEPTH"),
    "nesting_300": (_deep(300), ["check", "SPEC"], 2, r"spec\.yaml:2: .*MAX_NESTING_DEPTH"),
    "nesting_100000": (
        _spec("pattern: " + "[" * 100_000 + "]" * 100_000 + "\n"),
        ["check", "SPEC"],
        2,
        r"MAX_NESTING_DEPTH",
    ),
    "nesting_at_limit": (_deep(31), ["check", "SPEC"], 0, None),
    "union_10000": (
        _spec("seq_len: 1000\npattern:\n" + "".join(f"  - window: {{before: {k}, after: 0}}\n" for k in range(10_000))),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:\d+: pattern: .*MAX_PATTERN_NODES",
    ),
    "union_at_limit": (
        _spec(
            "seq_len: 4096\npattern:\n"
            + "".join(f"  - window: {{before: {k}, after: 0, dilation: {k + 1}}}\n" for k in range(999))
        ),
        ["check", "SPEC"],
        0,
        None,
    ),
    "lowering_error_check": (
        _spec("seq_len: 100\npattern:\n  - window: {size: 4}\n  - sink: {count: 200}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:5: pattern\[1\]\.sink\.count: count 200 exceeds seq_len 100",
    ),
    "lowering_error_verify": (
        _spec("seq_len: 100\npattern:\n  - window: {size: 4}\n  - sink: {count: 200}\n"),
        ["verify", "SPEC", "--layers", "2"],
        2,
        r"spec\.yaml:5: pattern\[1\]\.sink\.count",
    ),
    "lowering_error_explain": (
        _spec("seq_len: 100\npattern:\n  - window: {size: 4}\n  - sink: {count: 200}\n"),
        ["explain", "SPEC"],
        2,
        r"spec\.yaml:5: pattern\[1\]\.sink\.count",
    ),
    "lowering_error_in_a_layer": (
        _spec(
            "seq_len: 100\npattern: {window: {size: 4}}\n"
            "layers:\n  - {count: 2}\n  - count: 1\n    pattern: {sink: {count: 200}}\n"
        ),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:7: layers\[1\]\.pattern\.sink\.count: count 200 exceeds seq_len 100",
    ),
    "yaml_sexagesimal": (
        _spec("seq_len: 1:04\npattern: {dense: {}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:2: .*'1:04' is ambiguous",
    ),
    "yaml_yes": (
        _spec("seq_len: 64\ncausal: yes\npattern: {dense: {}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:3: .*'yes' is ambiguous",
    ),
    "yaml_octal": (
        _spec("seq_len: 010\npattern: {dense: {}}\n"),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:2: .*'010' is ambiguous",
    ),
    "name_right_to_left_override": (
        'name: "ab\\u202Ecd"\nseq_len: 64\npattern: {dense: {}}\n',
        ["check", "SPEC"],
        2,
        r"spec\.yaml:1: name: control or format character U\+202E \(RIGHT-TO-LEFT OVERRIDE\) at index 2",
    ),
    "name_nul": (
        'name: "ab\\0cd"\nseq_len: 64\npattern: {dense: {}}\n',
        ["check", "SPEC"],
        2,
        r"spec\.yaml:1: name: control or format character U\+0000 \(Cc\) at index 2",
    ),
    "description_zero_width_space": (
        _spec('description: "a\\u200Bb"\nseq_len: 64\npattern: {dense: {}}\n'),
        ["check", "SPEC"],
        2,
        r"spec\.yaml:2: description: control or format character U\+200B",
    ),
    "no_seq_len": (_spec("pattern: {dense: {}}\n"), ["compile", "SPEC"], 2, r"pass --seq-len N"),
    "verify_without_schedule": (
        _spec("seq_len: 64\npattern: {dense: {}}\n"),
        ["verify", "SPEC"],
        2,
        r"--layers: the spec has no `layers:` schedule",
    ),
    "verify_layers_10_30_proven": (
        _MIXED_SCHEDULE,
        ["verify", "SPEC", "--layers", str(10**30), "--json"],
        0,
        None,
    ),
    "verify_layers_at_min_layers": (_MIXED_SCHEDULE, ["verify", "SPEC", "--layers", "11"], 0, None),
    "verify_layers_below_min_layers": (_MIXED_SCHEDULE, ["verify", "SPEC", "--layers", "10"], 1, None),
    "verify_layers_10_30_never": (
        _spec("seq_len: 4096\npattern: {block_local: {size: 16}}\n"),
        ["verify", "SPEC", "--layers", str(10**30)],
        1,
        None,
    ),
    "verify_layers_5001_digits": (
        None,
        ["verify", "specs/longformer.yaml", "--layers", "1" + "0" * 5000],
        2,
        r"--layers: a whole number of 5001 digits is past every limit",
    ),
    "verify_defaults_to_one_cycle": (None, ["verify", "specs/longformer.yaml"], 0, None),
}

_PER_HEAD = (
    "import maskc, torch\n"
    "spec = maskc.Spec(name='x', seq_len=64, heads=4, pattern=maskc.Dense(),"
    " head_patterns=[{'heads': [1], 'pattern': {'window': {'size': 2}}}])\n"
    "p = maskc.compile(spec)\nq = torch.zeros(1, 2, 64, 8)\n"
)

#: id → (snippet that sets `result`, regex the repr of `result` must match)
PYTHON_CASES: dict[str, tuple[str, str]] = {
    # in the runner, not in pytest's process: torch.compile imports torch._dynamo, after which
    # Triton's interpreter (tests/test_backend_triton.py) no longer runs in that process
    "torch_compile_cpu_backend": (
        "import torch, maskc\nmaskc.available_backends()\n"
        "pattern = maskc.compile('specs/longformer.yaml', seq_len=128, block_size=32)\n"
        "gen = torch.Generator().manual_seed(0)\n"
        "q, k, v = (torch.randn(1, 12, 128, 16, generator=gen, dtype=torch.float64, requires_grad=True)"
        " for _ in range(3))\n"
        "compiled = torch.compile(lambda q, k, v: maskc.attention(q, k, v, pattern))\n"
        "out = compiled(q, k, v)\n(grad,) = torch.autograd.grad(out.square().sum(), q)\n"
        "eager = maskc.attention(q, k, v, pattern)\n(eager_grad,) = torch.autograd.grad(eager.square().sum(), q)\n"
        "result = (bool(torch.equal(out, eager)), bool(torch.equal(grad, eager_grad)))\n",
        r"^\(True, True\)$",
    ),
    "per_head_advice": (
        _PER_HEAD + "try:\n    maskc.attention(q, q, q, p)\nexcept maskc.BackendError as err:\n    result = str(err)\n",
        r"^.pattern 'x' is compiled for 4 heads, but q has 2; its spec's head_patterns are for 4 heads, so q needs 4",
    ),
    "per_head_advice_is_right": (
        _PER_HEAD + "try:\n    maskc.compile(spec, heads=2)\nexcept maskc.SpecError as err:\n    result = str(err)\n",
        r"per-head patterns for 4 heads",
    ),
    "zero_length_advice": (
        "import maskc, torch\np = maskc.compile('specs/longformer.yaml', seq_len=64)\nq = torch.zeros(1, 12, 0, 8)\n"
        "try:\n    maskc.attention(q, q, q, p)\nexcept maskc.BackendError as err:\n    result = str(err)\n",
        r"^'q, k and v have seq_len 0: attention needs at least one position",
    ),
    "numbers_too_long_to_print": (
        "import maskc\nresult = []\n"
        "for call in (lambda: maskc.Window(size=10**5000), lambda: maskc.compile('specs/longformer.yaml',"
        " seq_len=10**5000), lambda: maskc.compile('specs/longformer.yaml', seq_len=64, block_size=(10**5000, 64)),"
        " lambda: maskc.compile('specs/longformer.yaml', seq_len=64, heads=10**5000)):\n"
        "    try:\n        call()\n    except maskc.MaskcError as err:\n"
        "        result.append('about 5001 digits' in str(err))\n",
        r"^\[True, True, True, True\]$",
    ),
    "window_negative": (
        "import maskc\ntry:\n    maskc.Window(before=-1)\nexcept maskc.SpecError as err:\n    result = str(err)\n",
        r"^'window\.before: must be greater than or equal to 0, got -1'$",
    ),
    "spec_heads_huge": (
        "import maskc\ntry:\n    maskc.Spec(name='x', pattern=maskc.Dense(), heads=10**12)\n"
        "except maskc.SpecError as err:\n    result = str(err)\n",
        r"heads: heads 1000000000000 exceeds the limit of 65536 \(maskc\.limits\.MAX_HEADS\)",
    ),
    "distinct_heads_fast": (
        "import maskc\nspec = maskc.Spec(name='x', heads=65536, pattern=maskc.Dense(),"
        " head_patterns=[{'heads': [3], 'pattern': {'window': {'size': 2}}}])\n"
        "patterns, index = spec.distinct_head_patterns(65536)\n"
        "result = (len(patterns), index[3], index[0], len(index))\n",
        r"^\(2, 1, 0, 65536\)$",
    ),
    "to_dense_of_65536_heads": (
        "import maskc\nspec = maskc.Spec(name='x', seq_len=1024, heads=65536, pattern=maskc.Dense(),"
        " head_patterns=[{'heads': [3], 'pattern': {'window': {'size': 2}}}])\n"
        "try:\n    maskc.compile(spec).to_dense()\nexcept maskc.TooLargeError as err:\n    result = str(err)\n",
        r"to_dense of 65536 heads at n = 1024 needs 64\.0 GiB",
    ),
    "cached_tables_read_only": (
        "import maskc, numpy as np\np = maskc.compile('specs/longformer.yaml', seq_len=1024)\n"
        "try:\n    p.layouts[0].col_idx[0] = 5\nexcept ValueError as err:\n    result = str(err)\n"
        "assert maskc.compile('specs/longformer.yaml', seq_len=1024).layouts[0].col_idx[0] == 0\n",
        r"read-only",
    ),
}


def _cases(tmp: Path) -> list[list[dict[str, Any]]]:
    """The cases as runner input, in two batches of about equal work."""
    cli = []
    for name, (text, argv, _, _) in CLI_CASES.items():
        spec = tmp / f"{name}.spec.yaml"
        if text is not None:
            spec.write_text(text)
        paths = {"SPEC": str(spec), "PNG": str(tmp / f"{name}.png")}
        cli.append({"id": name, "argv": [paths.get(a, a) for a in argv]})
    python = [{"id": name, "python": code} for name, (code, _) in PYTHON_CASES.items()]
    everything = cli + python
    return [everything[0::2], everything[1::2]]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("hostile")
    runner = Path(__file__).with_name("hostile_runner.py")
    procs = []
    for k, batch in enumerate(_cases(tmp)):
        cases = tmp / f"batch{k}.json"
        cases.write_text(json.dumps(batch))
        with cases.open() as stdin:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(runner), str(MEMORY_LIMIT)],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                    env={**os.environ, "MASKC_CACHE_DIR": str(tmp / "cache")},
                )
            )
    results: dict[str, dict[str, Any]] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=1200)
        for line in out.splitlines():
            item = json.loads(line)
            results[item["id"]] = item
        results.setdefault("_stderr", {"text": ""})["text"] += err[-2000:]
    return results


def _outcome(outcomes: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in outcomes:
        pytest.fail(f"case {name} did not finish (killed?): runner stderr {outcomes['_stderr']['text']!r}")
    item = outcomes[name]
    assert item.get("raised") is None, f"{name} raised {item['raised']}: {item.get('trace')}"
    limit = CPU_LIMIT_OF.get(name, CPU_LIMIT)
    assert item["cpu_seconds"] < limit, f"{name} used {item['cpu_seconds']} CPU seconds"
    return item


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_case(outcomes: dict[str, dict[str, Any]], name: str) -> None:
    item = _outcome(outcomes, name)
    _, _, code, pattern = CLI_CASES[name]
    assert item["code"] == code, item
    assert "Traceback" not in item["stderr"]
    if pattern is not None:
        assert re.search(pattern, item["stderr"]), item["stderr"]
    if code == 2:
        assert item["stderr"].count("error:") == 1 and item["stdout"] == ""


@pytest.mark.parametrize("name", list(PYTHON_CASES))
def test_python_case(outcomes: dict[str, dict[str, Any]], name: str) -> None:
    item = _outcome(outcomes, name)
    assert re.search(PYTHON_CASES[name][1], item["result"]), item


def test_max_seq_len_answer_is_exact(outcomes: dict[str, dict[str, Any]]) -> None:
    """At n = 2**31 − 1, a window of size 8 (4 each side) has exactly 9n − 2·(1+2+3+4) active pairs."""
    stats = json.loads(_outcome(outcomes, "max_seq_len_large_tiles")["stdout"])
    n = 2**31 - 1
    assert stats["n"] == n and stats["active_pairs"] == 9 * n - 20
    assert stats["tiles_stored"] == 3 * (n // 1024 + 1) - 2


def test_reach_and_verify_agree(outcomes: dict[str, dict[str, Any]]) -> None:
    """--reach 100 ends within the CPU limit (it stops after the last new pair) and every required pair is reached."""
    text = _outcome(outcomes, "reach_100_stops_early")["stdout"]
    rows = text.splitlines()[1:-1]  # the output's tail: whole map rows, then the legend
    assert rows and not any("-" in row for row in rows)


def test_show_into_a_closed_pipe() -> None:
    """`maskc show … | head -1`: the reader leaves early; no traceback, no error message."""
    show = subprocess.Popen(
        [sys.executable, "-m", "maskc", "show", "specs/longformer.yaml", "--seq-len", "128"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert show.stdout is not None
    show.stdout.readline()
    show.stdout.close()
    _, err = show.communicate(timeout=300)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err


def test_show_png_at_max_seq_len(outcomes: dict[str, dict[str, Any]]) -> None:
    """The picture at n = 2**31 − 1 is drawn from the stored tiles' classes, not tile by tile."""
    out = _outcome(outcomes, "show_png_max_seq_len")["stdout"]
    assert re.search(r"wrote .*show_png_max_seq_len\.png: 1 panel\(s\), n = 2147483647, 256 cells per side", out), out


def test_emit_at_max_seq_len_reads_pages(outcomes: dict[str, dict[str, Any]]) -> None:
    """The kernel for a token list at n = 2**31 − 1 looks members up in pages, not in an n-long table."""
    out = _outcome(outcomes, "emit_triton_token_list_max_seq_len")["stdout"]
    assert "_pages + (q_idx >> 12)" in out and "_members" not in out, out


def test_verify_at_10_30_layers(outcomes: dict[str, dict[str, Any]]) -> None:
    """--layers 10**30 is answered exactly (reach only grows, and the walk stops once a whole cycle adds
    nothing): proven, with the min_layers that --layers 11 proves and --layers 10 refutes."""
    report = json.loads(_outcome(outcomes, "verify_layers_10_30_proven")["stdout"])
    assert report["reachable"] is True and report["layers"] == 10**30 and report["min_layers"] == 11, report
    never = _outcome(outcomes, "verify_layers_10_30_never")["stdout"]
    assert f"within {10**30} layers" in never, never
