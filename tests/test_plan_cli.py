"""`maskc plan`: the context-parallel plan on paper, text and JSON, and its errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

from clitools import run_cli, write_spec

WINDOW = "name: swa\nseq_len: 65536\ncausal: true\nheads: 16\npattern: {window: {before: 4095, after: 0}}\n"


def test_plan_json_has_the_halo_for_every_rank(tmp_path: Path) -> None:
    result = run_cli("plan", write_spec(tmp_path, WINDOW), "--ranks", "8", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["call"]["bytes_per_key"] == 16 * 2 * 128 * 2
    received = [r["keys_received"] for r in plan["per_rank"]]
    assert received == [0] + [4096] * 7
    assert [r["bytes_received"] for r in plan["per_rank"]] == [k * 16 * 2 * 128 * 2 for k in received]
    assert all(r["ships_rows_to"] == {} for r in plan["per_rank"])
    assert plan["per_rank"][3]["receives_from"] == {"2": [[3 * 8192 - 4096, 3 * 8192]]}
    work = [r["work"] for r in plan["per_rank"]]
    assert work[0] < work[1] == work[7]  # the window's first rows read fewer keys
    assert abs(plan["imbalance"] - (max(work) / (sum(work) / 8) - 1)) < 1e-12


def test_plan_text_for_many_ranks(tmp_path: Path) -> None:
    result = run_cli("plan", write_spec(tmp_path, WINDOW), "--ranks", "64", "--sharding", "zigzag", "--transfers")
    assert result.returncode == 0, result.stderr
    assert "imbalance" in result.stdout and "all-gather" in result.stdout
    assert "transfers" in result.stdout and "→" in result.stdout


def test_plan_refuses_an_uneven_split(tmp_path: Path) -> None:
    result = run_cli("plan", write_spec(tmp_path, WINDOW), "--ranks", "3")
    assert result.returncode == 2
    assert "does not split into 3 equal chunks" in result.stderr and "Traceback" not in result.stderr


def test_plan_refuses_ranks_past_the_limit(tmp_path: Path) -> None:
    result = run_cli("plan", write_spec(tmp_path, WINDOW), "--ranks", "65536")
    assert result.returncode == 2
    assert "ranks 65536 exceeds the limit of 4096 (maskc.limits.MAX_PLAN_RANKS)" in result.stderr
    assert "Traceback" not in result.stderr


def test_plan_refuses_run_time_patterns(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: c\nseq_len: 256\npattern: {cluster: {clusters: 4}}\n")
    result = run_cli("plan", spec, "--ranks", "2")
    assert result.returncode == 2
    assert "static patterns only" in result.stderr and "Traceback" not in result.stderr


DENSE = "name: dc\nseq_len: 8192\ncausal: true\nheads: 16\npattern: {dense: {}}\n"


def test_plan_takes_the_ring_for_dense_causal(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, DENSE)
    result = run_cli("plan", spec, "--ranks", "4", "--sharding", "zigzag", "--block-size", "256", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    per_key = 16 * 2 * 128 * 2
    assert plan["mode"] == "ring" and plan["peak_keys_held"] == 2 * 2048
    assert plan["imbalance"] < 0.01 and plan["ring_step_imbalance"] < 0.01
    # forward: the three other shards; backward: them again and their gradients in float32
    assert {(r["bytes_received"], r["grad_bytes_received"]) for r in plan["per_rank"]} == {
        (6144 * per_key, 6144 * per_key * 3)
    }
    text = run_cli("plan", spec, "--ranks", "4", "--sharding", "zigzag", "--block-size", "256").stdout
    assert "mode           ring:" in text and "ring steps" in text
    halo = json.loads(run_cli("plan", spec, "--ranks", "4", "--block-size", "256", "--mode", "halo", "--json").stdout)
    assert halo["mode"] == "halo" and halo["reason"] == "asked for"
    # a budget of 1 GiB holds the halos' 6,144 keys (48 MiB): auto keeps them
    kept = run_cli("plan", spec, "--ranks", "4", "--sharding", "zigzag", "--block-size", "256", "--max-held-gib", "1")
    assert "mode           halo: 6,144 keys held at once, within the budget" in kept.stdout, kept.stderr
