"""Bad specs get clear errors naming the file, the line or field path, and what was expected."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import maskc
from maskc.errors import DynamicPatternError, MaskcWarning, SpecError, TooLargeError


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        maskc.parse_spec(text, source="bad.yaml")
    return info.value


def _compile_error(text: str, **kwargs: object) -> SpecError:
    spec = maskc.parse_spec(text, source="bad.yaml")
    with pytest.raises(SpecError) as info:
        maskc.compile(spec, **kwargs)
    return info.value


def test_unknown_primitive_suggests_the_closest_name() -> None:
    err = _error("name: x\npattern:\n  - windw: {size: 4}\n")
    assert "unknown primitive 'windw'" in str(err)
    assert "did you mean 'window'" in str(err)
    assert err.path == "pattern[0]"
    assert err.line == 3
    assert str(err).startswith("bad.yaml:3: pattern[0]:")


@pytest.mark.parametrize(
    ("pattern", "path", "needle"),
    [
        ("{window: {before: -1}}", "pattern.window.before", "greater than or equal to 0"),
        ("{block_local: {size: 0}}", "pattern.block_local.size", "greater than 0"),
        ("{stride: {every: 0}}", "pattern.stride.every", "greater than 0"),
        ("{window: {size: 4, before: 2}}", "pattern.window", "either size or before/after"),
        ("{global: {tokens: [1], first: 2}}", "pattern.global", "exactly one of tokens, first, every"),
        ("{global: {every: 4, offset: 4}}", "pattern.global", "offset must be below every"),
        ("{union: []}", "pattern.union", "empty union"),
        ("{difference: [{dense: {}}]}", "pattern.difference", "exactly two patterns"),
        ("{window: 5}", "pattern.window", "parameters of 'window' are a mapping"),
        ("{window: {size: 4}, stride: {every: 2}}", "pattern", "exactly one key"),
        ("{window: {size: 4, colour: red}}", "pattern.window.colour", "Extra inputs are not permitted"),
    ],
)
def test_bad_parameters_name_the_field(pattern: str, path: str, needle: str) -> None:
    err = _error(f"name: x\npattern: {pattern}\n")
    assert err.path == path
    assert needle in err.message
    assert err.line == 2


def test_nested_error_path_and_line() -> None:
    text = "name: x\npattern:\n  union:\n    - window: {size: 4}\n    - intersect:\n        - stride: {every: 0}\n"
    err = _error(text)
    assert err.path == "pattern.union[1].intersect[0].stride.every"
    assert err.line == 6


def test_block_size_must_be_a_power_of_two() -> None:
    err = _error("name: x\nblock_size: 48\npattern: {dense: {}}\n")
    assert err.path == "block_size" and "power of two" in err.message and err.line == 2


def test_tile_shape_must_be_a_power_of_two() -> None:
    err = _compile_error("name: x\nseq_len: 64\npattern: {dense: {}}\n", block_size=24)
    assert err.path == "block_size" and "powers of two" in err.message


@pytest.mark.parametrize("seq_len", [0, -5])
def test_seq_len_must_be_positive(seq_len: int) -> None:
    err = _error(f"name: x\nseq_len: {seq_len}\npattern: {{dense: {{}}}}\n")
    assert err.path == "seq_len"
    err = _compile_error("name: x\npattern: {dense: {}}\n", seq_len=seq_len)
    assert err.path == "seq_len"


def test_missing_seq_len_is_explained() -> None:
    err = _compile_error("name: x\npattern: {dense: {}}\n")
    assert "no sequence length" in err.message


def test_global_tokens_must_be_below_n() -> None:
    err = _compile_error("name: x\nseq_len: 100\npattern: [{window: {size: 4}}, {global: {tokens: [0, 100]}}]\n")
    assert err.path == "pattern[1].global.tokens"
    assert "[100]" in err.message and "seq_len 100" in err.message


def test_random_per_row_must_fit() -> None:
    err = _compile_error("name: x\nseq_len: 100\nblock_size: 64\npattern: {random: {per_row: 3}}\n")
    assert err.path == "pattern.random.per_row" and "2 key blocks" in err.message


def test_head_index_must_be_below_heads() -> None:
    err = _error("name: x\nheads: 2\npattern: {dense: {}}\nhead_patterns:\n  - {heads: [2], pattern: {dense: {}}}\n")
    assert "head 2 is not below heads = 2" in err.message


def test_head_patterns_need_heads() -> None:
    err = _error("name: x\npattern: {dense: {}}\nhead_patterns:\n  - {heads: [0], pattern: {dense: {}}}\n")
    assert "needs `heads`" in err.message


def test_not_yaml_gives_the_line() -> None:
    err = _error("name: x\npattern: [unclosed\n")
    assert "not valid YAML" in err.message and err.line is not None


def test_not_a_mapping() -> None:
    assert "this file is a list" in _error("- 1\n- 2\n").message
    assert "this file is empty" in _error("").message


def test_unsafe_yaml_tags_are_refused() -> None:
    err = _error("name: !!python/object/apply:os.system ['echo hi']\npattern: {dense: {}}\n")
    assert "not valid YAML" in err.message


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{k}: &a{k} [*a{k - 1}, *a{k - 1}, *a{k - 1}, *a{k - 1}, *a{k - 1}, *a{k - 1}]" for k in range(1, 9)]
    err = _error("\n".join(lines) + "\nname: x\npattern: {dense: {}}\n")
    assert "more than" in err.message and "YAML nodes" in err.message


def test_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\npattern: {dense: {}}\n" + "#" * (1 << 21))
    with pytest.raises(SpecError, match=r"over the \d+-byte limit"):
        maskc.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read spec file"):
        maskc.load(tmp_path / "nope.yaml")


def test_to_dense_on_a_dynamic_pattern() -> None:
    pattern = maskc.compile(maskc.parse_spec("name: x\nseq_len: 64\npattern: {cluster: {clusters: 4}}\n"))
    assert pattern.dynamic
    with pytest.raises(DynamicPatternError, match="decided at run time"):
        pattern.to_dense()


def test_to_dense_refuses_huge_n() -> None:
    pattern = maskc.compile(maskc.parse_spec("name: x\npattern: {window: {size: 8}}\n"), seq_len=1 << 16)
    with pytest.raises(TooLargeError, match="limit is n = 16384"):
        pattern.to_dense()


def test_rows_without_keys_warn() -> None:
    text = "name: x\nseq_len: 64\npattern: {intersect: [{global: {first: 8, direction: rows}}, {dense: {}}]}\n"
    with pytest.warns(MaskcWarning, match="56 query row"):
        pattern = maskc.compile(maskc.parse_spec(text), block_size=16)
    assert np.array_equal(pattern.layouts[0].empty_rows(), np.arange(8, 64))


def test_python_objects_validate_too() -> None:
    spec = maskc.Spec(name="x", pattern=[maskc.Window(size=8), maskc.Global(tokens=[0])])
    assert spec.pattern.kind == "union"
    with pytest.raises(maskc.SpecError, match=r"^window: give size, or before"):
        maskc.Window()
    with pytest.raises(maskc.SpecError, match=r"^window\.before: must be greater than or equal to 0, got -1$"):
        maskc.Window(before=-1)
    with pytest.raises(maskc.SpecError, match=r"^pattern\[1\]\.global: tokens lists \[1\] more than once"):
        maskc.Spec(name="x", pattern=[{"window": {"size": 2}}, {"global": {"tokens": [1, 1]}}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert maskc.compile(spec, seq_len=32, block_size=16).n == 32


def test_duplicate_keys_are_refused() -> None:
    err = _error("name: x\npattern: {window: {size: 4}}\npattern: {dense: {}}\n")
    assert err.line == 3 and "the key 'pattern' is given twice" in err.message


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('name: x\nseq_len: "16"\npattern: {dense: {}}\n', "seq_len"),
        ("name: x\npattern: {window: {before: true}}\n", "pattern.window.before"),
        ("name: x\ncausal: yes_please\npattern: {dense: {}}\n", "causal"),
        ('name: x\npattern: {global: {tokens: ["3"]}}\n', "pattern.global.tokens[0]"),
    ],
)
def test_values_of_the_wrong_type_are_not_coerced(text: str, path: str) -> None:
    assert _error(text).path == path


def test_compile_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("name: x\nseq_len: 100\npattern:\n  - window: {size: 4}\n  - global: {tokens: [0, 100]}\n")
    with pytest.raises(SpecError) as info:
        maskc.compile(path)
    assert str(info.value).startswith(f"{path}:5: pattern[1].global.tokens: global tokens [100]")


def test_head_index_error_points_at_the_entry() -> None:
    text = "name: x\nheads: 2\npattern: {dense: {}}\nhead_patterns:\n  - {heads: [0], pattern: {dense: {}}}\n"
    err = _error(text + "  - {heads: [2], pattern: {dense: {}}}\n")
    assert (err.path, err.line) == ("head_patterns[1].heads", 6)


def test_cache_keeps_each_specs_own_name() -> None:
    alpha = maskc.Spec(name="alpha", pattern={"window": {"size": 8}})
    beta = maskc.Spec(name="beta", pattern={"window": {"size": 8}})
    assert maskc.compile(alpha, seq_len=64).spec.name == "alpha"
    assert maskc.compile(beta, seq_len=64).spec.name == "beta"
