"""Which catalogue pattern a spec resembles: by structure, with the masks' overlap as one signal."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import pytest
from clitools import ROOT, run_cli, write_spec

import maskc
from maskc.errors import MaskcWarning
from maskc.recognise import describe, rank, recognise, shape_of

LONGFORMER_SHAPED = [
    "seq_len: 2048\npattern:\n  - window: {size: 128}\n  - global: {tokens: [0, 1]}\n",
    "seq_len: 2048\npattern:\n  - window: {before: 128, after: 128}\n  - global: {first: 2}\n",
]


@pytest.mark.parametrize("text", LONGFORMER_SHAPED)
def test_longformer_shaped_spec_is_longformer(text: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        found = recognise(maskc.parse_spec(text))
    assert found is not None and found.name == "longformer", found
    _, score, reason = found
    assert 0 < score <= 1 and reason.startswith("longformer: a symmetric window + a few global tokens")


def test_the_four_causal_long_context_models_do_not_tie() -> None:
    """At n = 1024 their masks are all the causal triangle (overlap 1.00 with each other)."""
    names = ["mistral_swa", "streaming_llm", "jamba", "minimax"]
    for subject in [*names, "hybrid_local_global"]:
        path = ROOT / "specs" / f"{subject}.yaml"
        ranked, _ = rank(maskc.load(path), source=path)
        scores = {r.name: r.score for r in ranked if r.name in names}
        for a, b in itertools.combinations(scores, 2):
            assert abs(scores[a] - scores[b]) > 0.005, (subject, a, b, scores)
    jamba = ROOT / "specs" / "jamba.yaml"
    assert recognise(maskc.load(jamba), source=jamba).name == "minimax"
    streaming = ROOT / "specs" / "streaming_llm.yaml"
    assert recognise(maskc.load(streaming), source=streaming).name == "mistral_swa"


def test_structure_alone_works_for_run_time_patterns() -> None:
    spec = maskc.parse_spec("seq_len: 1024\ncausal: true\npattern: {cluster: {clusters: sqrt(n), method: lsh}}\n")
    found = recognise(spec)
    assert found is not None and found.name == "reformer" and "mask overlap" not in found.reason


def test_a_copy_scores_one_and_the_reason_says_why() -> None:
    path = ROOT / "specs" / "sparse_transformer_fixed.yaml"
    found = recognise(maskc.parse_spec(path.read_text()))
    assert found.name == "sparse_transformer_fixed" and found.score == pytest.approx(1.0)
    assert "local blocks" in found.reason and "periodic global columns" in found.reason


def test_describe_reads_the_shape() -> None:
    jamba = shape_of(maskc.load(ROOT / "specs" / "jamba.yaml"))
    assert describe(jamba) == "causal: dense attention + 1 attention layer per 8, the rest recurrent"
    assert describe(shape_of(maskc.load(ROOT / "specs" / "mistral_swa.yaml"))) == "a causal window"


def test_explain_prints_score_and_reason(tmp_path: Path) -> None:
    path = write_spec(tmp_path, LONGFORMER_SHAPED[0])
    result = run_cli("explain", path)
    assert result.returncode == 0, result.stderr
    assert (
        "closest      longformer (0." in result.stdout and "a symmetric window + a few global tokens" in result.stdout
    )
