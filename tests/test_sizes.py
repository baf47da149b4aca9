"""Sizes as expressions in n: the grammar, its rounding, located errors, and patterns that scale with n."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import ROOT, run_cli, write_spec
from hypothesis import given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, same_value, size_value
from test_runtime_patterns import _brute_selection

import maskc
from maskc.clustering import resolve_dynamic
from maskc.errors import MaskcWarning, SpecError
from maskc.explain import growth
from maskc.primitives.sizes import ExpressionError, evaluate, parse_expression
from maskc.rules import TopkRule


@pytest.mark.parametrize(
    ("text", "n", "value"),
    [
        ("sqrt(n)", 4096, 64),
        ("sqrt(n)", 4095, 63),
        ("ceil(sqrt(n))", 4095, 64),
        ("ceil(sqrt(n))", 4096, 64),
        ("n / 64", 1000, 15),
        ("ceil(n / 64)", 1000, 16),
        ("n // 64", 1000, 15),
        ("2 * sqrt(n)", 1000, 62),
        ("log2(n)", 1000, 9),
        ("ceil(log2(n))", 1000, 10),
        ("ceil(log2(n))", 1024, 10),
        ("floor(n / 3)", 10, 3),
        ("min(n, 64)", 32, 32),
        ("max(1, n / 1000)", 500, 1),
        ("n % 7 + (n - 1) * 2", 10, 21),
        ("-3 + n", 10, 7),
    ],
)
def test_values_and_rounding(text: str, n: int, value: int) -> None:
    assert evaluate(text, n) == value


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("sqrt(m)", "unknown name 'm'"),
        ("__import__('os')", "functions are"),
        ("n ** 2", "not allowed"),
        ("1.5 * n", "not a whole number"),
        ("ceil(n + 1)", "ceil applies to a division, sqrt or log2"),
        ("min(n)", "two or more arguments"),
        ("sqrt(n, 2)", "one argument"),
        ("n.real", "not allowed"),
        ("n if n else 1", "not allowed"),
        ("(n", "neither a whole number nor an expression"),
        ("x" * 300, "at most 200 characters"),
    ],
)
def test_grammar_refuses(text: str, needle: str) -> None:
    with pytest.raises(ExpressionError, match=None) as info:
        parse_expression(text)
    assert needle in str(info.value)


def test_bad_expression_in_a_file_is_located(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "seq_len: 64\npattern:\n  - window: {size: 4}\n  - stride: {every: sqrt(m)}\n")
    with pytest.raises(SpecError) as info:
        maskc.load(path)
    assert str(info.value).startswith(f"{path}:4: pattern[1].stride.every: unknown name 'm'")
    result = run_cli("check", path)
    assert result.returncode == 2 and "pattern[1].stride.every" in result.stderr and "Traceback" not in result.stderr


def test_value_out_of_range_at_the_compile_n_is_located(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "seq_len: 4096\npattern:\n  - window: {size: 4}\n  - stride: {every: n / 8192}\n")
    with pytest.raises(SpecError) as info:
        maskc.compile(path)
    assert str(info.value) == f"{path}:4: pattern[1].stride.every: `n / 8192` is 0 at n = 4096; it must be at least 1"
    assert maskc.compile(path, seq_len=16384).layouts[0].rule.describe().endswith("step 2])")
    result = run_cli("compile", path)
    assert (
        result.returncode == 2 and "`n / 8192` is 0 at n = 4096" in result.stderr and "Traceback" not in result.stderr
    )


def test_division_by_zero_and_bounds_after_evaluation(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "seq_len: 100\npattern: {global: {every: 10, offset: n / 5}}\n")
    with pytest.raises(SpecError, match=r":2: pattern.global.offset: offset `n / 5` is 20 at n = 100, not below every"):
        maskc.compile(path)
    zero = write_spec(tmp_path, "seq_len: 100\npattern: {window: {before: n / (n - 100)}}\n", "zero.yaml")
    with pytest.raises(SpecError, match=r"pattern.window.before: `n / \(n - 100\)` at n = 100: division by zero"):
        maskc.compile(zero)


def test_literal_bounds_keep_their_messages() -> None:
    with pytest.raises(SpecError, match=r"pattern\.stride\.every: must be greater than 0, got 0"):
        maskc.parse_spec("pattern: {stride: {every: 0}}\n")
    with pytest.raises(SpecError, match="expected a whole number or an expression in n, got float"):
        maskc.parse_spec("pattern: {stride: {every: 2.0}}\n")


def test_expressions_round_trip_and_hash_by_text() -> None:
    spec = maskc.parse_spec("pattern: {axial: {width: sqrt(n)}}\n")
    assert spec.to_data()["pattern"] == {"axial": {"width": "sqrt(n)"}}
    assert maskc.Spec.model_validate(spec.to_data()).content_hash() == spec.content_hash()
    python = maskc.Spec(pattern=maskc.Axial(width="sqrt(n)"))
    assert python.name == "spec" and python.content_hash() == spec.content_hash()


def test_cluster_count_in_n_reaches_the_run_time_assignment() -> None:
    pattern = maskc.compile(maskc.parse_spec("seq_len: 256\npattern: {cluster: {clusters: sqrt(n), method: lsh}}\n"))
    (leaf,) = list(pattern.layouts[0].rule.leaves())
    assert leaf.params.clusters == 16
    with pytest.raises(SpecError, match="clusters must be even; `sqrt\\(n\\)` is 15"):
        maskc.compile(maskc.parse_spec("seq_len: 225\npattern: {cluster: {clusters: sqrt(n), method: lsh}}\n"))


@pytest.mark.parametrize("n", [64, 100, 257])
def test_scaled_spec_matches_brute_force(n: int) -> None:
    data = {
        "causal": True,
        "block_size": 16,
        "pattern": [
            {"window": {"before": "sqrt(n)", "after": 0}},
            {"stride": {"every": "ceil(sqrt(n))"}},
            {"global": {"every": "n / 8", "last": "log2(n) - 3", "direction": "columns"}},
            {"random": {"per_row": "log2(n) / 3"}},
        ],
    }
    got = maskc.compile(maskc.Spec.model_validate(data), seq_len=n, block_size=16).to_dense()
    assert np.array_equal(got, brute_force_mask(data, n))


def _expressions(depth: int = 3) -> st.SearchStrategy[str]:
    leaves = st.one_of(st.just("n"), st.integers(0, 300).map(str))

    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "//", "%"]), inner).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(st.sampled_from(["sqrt", "log2", "ceil(sqrt", "ceil(log2", "floor(sqrt"]), inner).map(
                lambda t: f"{t[0]}({t[1]}){')' if '(' in t[0] else ''}"
            ),
            st.tuples(inner, inner).map(lambda t: f"ceil({t[0]} / {t[1]})"),
            st.tuples(st.sampled_from(["min", "max"]), inner, inner).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        )

    return st.recursive(leaves, grow, max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(_expressions(), st.integers(1, 1 << 20))
def test_evaluation_matches_the_independent_reader(text: str, n: int) -> None:
    try:
        value = evaluate(text, n)
    except ExpressionError:
        return  # division by zero, sqrt of a negative, log2 of a non-positive: no value at this n
    assert value == size_value(text, n)


@pytest.mark.parametrize(
    "pattern",
    [
        [{"window": {"before": "sqrt(n)", "after": 0}}, {"stride": {"every": "sqrt(n)"}}],
        [{"block_local": {"size": "sqrt(n)"}}, {"global": {"every": "sqrt(n)", "last": 8, "direction": "columns"}}],
        {"axial": {"width": "sqrt(n)"}},
    ],
    ids=["strided", "fixed", "axial"],
)
@pytest.mark.parametrize("n", [1024, 4096, 16384])
def test_sqrt_n_patterns_read_n_sqrt_n_at_every_n(pattern: object, n: int) -> None:
    spec = maskc.Spec.model_validate({"causal": True, "pattern": pattern})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        scaling = growth(spec, n)  # what `maskc explain` reports as the complexity class
    assert scaling is not None and scaling.complexity == "O(n·√n)", scaling


def test_explain_reports_the_class_of_a_scaled_spec(tmp_path: Path) -> None:
    path = write_spec(
        tmp_path,
        "seq_len: 4096\ncausal: true\npattern:\n  - block_local: {size: sqrt(n)}\n"
        "  - global: {every: sqrt(n), last: 8, direction: columns}\n",
    )
    result = run_cli("explain", path)
    assert result.returncode == 0, result.stderr
    assert "complexity   O(n·√n)" in result.stdout and "sizes written in n follow it" in result.stdout


def test_catalogue_strided_spec_scales_and_keeps_its_figures() -> None:
    spec = maskc.load(ROOT / "specs" / "sparse_transformer_strided.yaml")
    at_16k = maskc.compile(spec).layouts[0].rule.describe()
    assert "band[-128..0]" in at_16k and "step 128" in at_16k
    assert "step 64]" in maskc.compile(spec, seq_len=4096).layouts[0].rule.describe()


def _compile_quietly(data: dict, n: int) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec.model_validate(data), seq_len=n)


@settings(max_examples=40, deadline=None)
@given(
    st.data(),
    st.integers(1, 9),
    st.sampled_from([4, 8, 16]),
    st.integers(1, 6),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_topk_blocks_in_n_select_as_the_brute_force(
    data: st.DataObject, count: int, block: int, blocks: int, causal: bool, seed: int
) -> None:
    """`topk: {blocks: <expression>}` selects, per query block, the brute force's choice with k read by
    the independent reader (specgen.size_value)."""
    n = count * block  # whole blocks of small integers: every mean and score is exact
    natural = st.sampled_from(["max(1, n / 16)", "max(1, sqrt(n) / 4)", "ceil(log2(n) / 3)", "min(n, 3)"])
    text = data.draw(st.one_of(same_value(blocks, n), natural))
    spec = {"causal": causal, "block_size": block, "pattern": {"topk": {"blocks": text}}}
    pattern = _compile_quietly(spec, n)
    (leaf,) = [leaf for leaf in pattern.layouts[0].rule.leaves() if isinstance(leaf, TopkRule)]
    k_blocks = size_value(text, n)
    assert leaf.params.blocks == k_blocks and isinstance(leaf.params.blocks, int)
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randint(-2, 3, (1, 1, n, 4), generator=gen).to(torch.float64) for _ in range(2))
    (resolved,) = resolve_dynamic(pattern, q, k)
    selected = _brute_selection(q[0, 0].numpy(), k[0, 0].numpy(), k_blocks, block, causal)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    want = selected[i // block, j // block] & ((j <= i) if causal else True)
    assert np.array_equal(resolved.layout_of_head(0).to_dense(), want)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ("{topk: {blocks: n / 1024}}", "pattern[1].topk.blocks: `n / 1024` is 0 at n = 512; it must be at least 1"),
        ("{topk: {blocks: sqrt(k)}}", "pattern[1].topk.blocks: unknown name 'k'"),
        ("{topk: {blocks: 0}}", "pattern[1].topk.blocks: must be greater than 0, got 0"),
        ("{cluster: {clusters: 4, iterations: log2(m)}}", "pattern[1].cluster.iterations: unknown name 'm'"),
        (
            "{cluster: {clusters: 4, iterations: n * 2}}",
            "pattern[1].cluster.iterations: `n * 2` at n = 512: iterations 1024 exceeds the limit of 1000",
        ),
        (
            "{cluster: {clusters: n * 256}}",
            "pattern[1].cluster.clusters: `n * 256` at n = 512: clusters 131072 exceeds the limit",
        ),
    ],
)
def test_topk_and_cluster_counts_in_n_fail_located_on_the_cli(tmp_path: Path, params: str, needle: str) -> None:
    path = write_spec(tmp_path, f"seq_len: 512\npattern:\n  - window: {{size: 4}}\n  - {params}\n")
    result = run_cli("check", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"{path}:4: {needle}" in result.stderr, result.stderr


@pytest.mark.parametrize("n", [64, 100])
def test_cluster_iterations_in_n_run_as_the_same_literal(n: int) -> None:
    """k-means with `iterations: log2(n)` assigns exactly as with the literal value at that n."""
    gen = torch.Generator().manual_seed(5)
    q, k = (torch.randn(1, 1, n, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    masks = []
    for iterations in ("log2(n)", n.bit_length() - 1):
        spec = {"pattern": {"cluster": {"clusters": 4, "iterations": iterations}}}
        pattern = _compile_quietly(spec, n)
        (leaf,) = list(pattern.layouts[0].rule.leaves())
        assert leaf.params.iterations == n.bit_length() - 1
        (resolved,) = resolve_dynamic(pattern, q, k)
        masks.append(resolved.layout_of_head(0).to_dense())
    assert np.array_equal(masks[0], masks[1])
