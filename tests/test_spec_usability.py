"""What a new user trips over: default names, the most specific error first, layers without attention,
BigBird's random draw among uncovered blocks, and the fixed pattern's summary columns in one entry."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clitools import ROOT, run_cli, write_spec
from specgen import brute_force_mask
from test_verify import Brute, layer_masks

import maskc
from maskc.catalogue import schedule_densities
from maskc.errors import MaskcWarning, SpecError
from maskc.reach.intervals import NotIntervalShapedError
from maskc.reach.search import BitEngine, IntervalEngine
from maskc.reach.stack import build_stack

# ----------------------------------------------------------------------------- names and errors


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "seq_len: 64\npattern: {window: {size: 4}}\n", "my_window.yaml")
    assert maskc.load(path).name == "my_window"
    assert maskc.parse_spec("pattern: {dense: {}}\n").name == "spec"
    assert maskc.Spec(pattern=maskc.Dense()).name == "spec"
    result = run_cli("compile", path)
    assert result.returncode == 0 and "my_window" in result.stdout, result.stderr


def test_most_specific_problem_first(tmp_path: Path) -> None:
    text = "seq_len: 64\nheads: 0\npattern:\n  - window: {size: 4}\n  - union:\n      - windw: {size: 2}\n"
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError) as info:
        maskc.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}:6: pattern[1].union[0]: unknown primitive 'windw' (did you mean 'window'?)")
    assert message.endswith("(and 1 more problem)")
    result = run_cli("check", path)
    assert result.returncode == 2 and "unknown primitive 'windw'" in result.stderr


def test_a_missing_field_comes_after_a_problem_at_its_depth() -> None:
    with pytest.raises(SpecError) as info:
        maskc.parse_spec("causal: maybe\n", source="bad.yaml")
    assert str(info.value).startswith("bad.yaml:1: causal:") and "(and 1 more problem)" in str(info.value)


# ----------------------------------------------------------------------------- mixers


@pytest.mark.parametrize(("name", "period"), [("jamba", 8), ("minimax", 8)])
def test_recurrent_layers_mix_so_hybrids_connect(name: str, period: int) -> None:
    result = run_cli("verify", f"specs/{name}.yaml", "--layers", "4", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["reachable"] and report["min_layers"] == 1
    spec = maskc.load(ROOT / "specs" / f"{name}.yaml")
    dense_causal = maskc.compile(spec).stats().element_density
    # one attention layer per period; the recurrent layers compute no attention FLOPs
    assert schedule_densities(spec, spec.seq_len).element == pytest.approx(dense_causal / period)


def test_recurrent_is_causal_dense_and_identity_is_self_only() -> None:
    data: dict[str, Any] = {
        "seq_len": 40,
        "pattern": {"window": {"before": 1, "after": 1}},
        "layers": [{"count": 1, "mixer": "identity"}, {"count": 2, "mixer": "recurrent"}, {"count": 1}],
    }
    spec = maskc.Spec.model_validate(data)
    masks = [maskc.compile(layer).to_dense() for _, layer in spec.layer_schedule()]
    assert np.array_equal(masks[0], np.eye(40, dtype=bool))
    assert np.array_equal(masks[1], np.tril(np.ones((40, 40), dtype=bool)))
    assert spec.layer_mixers() == ["identity", "recurrent", "attention"]
    report = maskc.verify(spec, 4)  # bidirectional: the window layer carries information backwards
    brute = Brute(layer_masks(data, 40), False)
    assert report.min_layers == brute.min_layers()


def test_mixer_refuses_a_pattern_and_unknown_values(tmp_path: Path) -> None:
    both = write_spec(
        tmp_path, "pattern: {dense: {}}\nlayers:\n  - {count: 2, mixer: recurrent, pattern: {dense: {}}}\n"
    )
    with pytest.raises(
        SpecError, match=r":3: layers\[0\]\.pattern: a `mixer: recurrent` layer has no attention pattern"
    ):
        maskc.load(both)
    bad = write_spec(tmp_path, "pattern: {dense: {}}\nlayers:\n  - {mixer: mamba}\n", "bad.yaml")
    result = run_cli("check", bad)
    assert result.returncode == 2 and "layers[0].mixer" in result.stderr and "recurrent" in result.stderr


def test_explain_names_the_mixer() -> None:
    result = run_cli("explain", "specs/jamba.yaml")
    assert result.returncode == 0, result.stderr
    assert "layers 1–4, 6–8 (recurrent mixer, no attention):" in result.stdout
    assert "{mixer: recurrent}" in result.stdout and "min_layers   1 at n = 32768" in result.stdout


# ----------------------------------------------------------------------------- random exclude


def _block_counts(mask: np.ndarray, block: int) -> np.ndarray:
    n = mask.shape[0]
    units = -(-n // block)
    return np.array(
        [
            [mask[a * block : (a + 1) * block, b * block : (b + 1) * block].any() for b in range(units)]
            for a in range(units)
        ]
    )


def test_bigbird_rows_get_exactly_their_random_blocks() -> None:
    spec = maskc.load(ROOT / "specs" / "bigbird.yaml")
    for n in (4096, 1000):
        lit = _block_counts(maskc.compile(spec, seq_len=n).to_dense(), 64)
        units = lit.shape[0]
        q = np.arange(2, units)  # global rows (the first two blocks) attend every block anyway
        covered = (np.abs(q[:, None] - np.arange(units)[None, :]) <= 1) | (np.arange(units)[None, :] < 2)
        assert (lit[2:].sum(axis=1) == covered.sum(axis=1) + 3).all(), n


def test_exclude_draw_is_seeded_and_matches_brute_force() -> None:
    data: dict[str, Any] = {
        "seq_len": 300,
        "block_size": 16,
        "pattern": [
            {"window": {"before": 1, "after": 1, "granularity": "block"}},
            {"global": {"first": 20}},
            {"random": {"per_row": 3, "seed": 5, "exclude": ["window", "global"]}},
        ],
    }
    spec = maskc.Spec.model_validate(data)
    got = maskc.compile(spec).to_dense()
    assert np.array_equal(got, brute_force_mask(data, 300))
    assert np.array_equal(got, maskc.compile(maskc.Spec.model_validate(data), block_size=32).to_dense())
    data["pattern"][2]["random"]["seed"] = 6
    assert not np.array_equal(got, maskc.compile(maskc.Spec.model_validate(data)).to_dense())


def test_a_row_with_few_candidates_takes_them_all() -> None:
    data = {
        "seq_len": 64,
        "block_size": 16,
        "pattern": [
            {"window": {"before": 1, "after": 1, "granularity": "block"}},
            {"random": {"per_row": 2, "exclude": ["window"]}},
        ],
    }
    mask = maskc.compile(maskc.Spec.model_validate(data)).to_dense()
    assert mask.all()  # 4 blocks: every row has at most 1 candidate left, and takes it
    assert np.array_equal(mask, brute_force_mask(data, 64))


@pytest.mark.parametrize(
    ("pattern", "path", "needle"),
    [
        (
            "[{window: {size: 2}}, {random: {per_row: 1, exclude: [global]}}]",
            "pattern[1].random.exclude",
            "no global entry",
        ),
        ("{random: {per_row: 1, exclude: [window]}}", "pattern.random.exclude", "put this random in a list"),
        ("[{window: {size: 2}}, {random: {per_row: 1, exclude: [random]}}]", "pattern[1].random.exclude", "not one"),
        (
            "[{window: {size: 2}}, {random: {per_row: 1, exclude: [window, window]}}]",
            "pattern[1].random.exclude",
            "twice",
        ),
    ],
)
def test_exclude_errors_are_located(tmp_path: Path, pattern: str, path: str, needle: str) -> None:
    file = write_spec(tmp_path, f"seq_len: 256\npattern: {pattern}\n")
    result = run_cli("compile", file)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{file}:2: {path}" in result.stderr and needle in result.stderr, result.stderr


# ----------------------------------------------------------------------------- global last


def _fixed(summary: list[dict[str, Any]]) -> dict[str, Any]:
    return {"causal": True, "block_size": 128, "pattern": [{"block_local": {"size": 128}}, *summary]}


@pytest.mark.parametrize("n", [100, 1000, 12288])
def test_last_c_of_every_block_is_the_eight_entry_form(n: int) -> None:
    one = _fixed([{"global": {"every": 128, "last": 8, "direction": "columns"}}])
    eight = _fixed([{"global": {"every": 128, "offset": o, "direction": "columns"}} for o in range(120, 128)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        if n < 120:
            with pytest.raises(SpecError, match="not below seq_len"):
                maskc.compile(maskc.Spec.model_validate(one), seq_len=n)
            return
        a = maskc.compile(maskc.Spec.model_validate(one), seq_len=n, block_size=64)
        b = maskc.compile(maskc.Spec.model_validate(eight), seq_len=n, block_size=64)
    assert np.array_equal(a.layouts[0].row_ptr, b.layouts[0].row_ptr)
    assert np.array_equal(a.layouts[0].col_idx, b.layouts[0].col_idx)
    assert np.array_equal(a.layouts[0].full, b.layouts[0].full)
    if n <= 1000:
        assert np.array_equal(a.to_dense(), b.to_dense())


def test_catalogue_fixed_specs_use_one_entry() -> None:
    for name in ("sparse_transformer_fixed", "sparse_transformer_fixed_heads"):
        text = (ROOT / "specs" / f"{name}.yaml").read_text()
        assert "last: 8" in text and "offset: 12" not in text


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ("{every: 16, last: 17}", "last must be at most every (16), got 17"),
        ("{first: 4, last: 2}", "last goes with every"),
        ("{last: 8}", "last goes with every (the last c of every block of l): add `every: l`"),
        ("{offset: 3}", "offset goes with every"),
        ("{tokens: [1], offset: 3}", "offset goes with every"),
        ("{every: 16, offset: 3, last: 2}", "not both"),
        ("{every: 16, last: 0}", "greater than 0"),
    ],
)
def test_last_errors(params: str, needle: str) -> None:
    with pytest.raises(SpecError) as info:
        maskc.parse_spec(f"pattern: {{global: {params}}}\n", source="bad.yaml")
    assert needle in str(info.value) and "pattern.global" in str(info.value)


def test_last_without_every_is_located_on_the_cli(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "seq_len: 64\npattern:\n  - window: {size: 4}\n  - global: {last: 8}\n")
    result = run_cli("check", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}:4: pattern[1].global: last goes with every" in result.stderr
    assert "got none" not in result.stderr


DENSE_CAUSAL = {"intersect": [{"dense": {}}, {"window": {"before": 1 << 20, "after": 0}}]}


@pytest.mark.parametrize(
    "data",
    [
        {"causal": True, "pattern": {"window": {"before": 8, "after": 0}}},
        {"causal": False, "pattern": [{"window": {"size": 16}}, {"global": {"tokens": [7]}}]},
        {"causal": True, "pattern": [{"window": {"before": 3}}, {"global": {"every": 48, "direction": "columns"}}]},
    ],
)
def test_recurrent_layers_on_large_tiles_answer_as_dense_causal_attention(data: dict[str, Any]) -> None:
    """Above n = 16384 a recurrent layer is laid out on large tiles; both engines must answer as for
    the same relation written as a causal dense attention layer on ordinary tiles."""
    n = 16_500
    recurrent = maskc.Spec.model_validate({**data, "layers": [{"count": 2}, {"mixer": "recurrent"}]})
    written = maskc.Spec.model_validate({**data, "layers": [{"count": 2}, {"pattern": DENSE_CAUSAL}]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        stacks = [build_stack(spec, seq_len=n) for spec in (recurrent, written)]
    assert stacks[0].patterns[-1].layout.grid.block_m == 128 and stacks[1].patterns[-1].layout.grid.block_m == 64
    for make in (lambda stack: BitEngine(stack, "test"), IntervalEngine):
        outcomes = []
        for stack in stacks:
            with contextlib.suppress(NotIntervalShapedError):
                outcomes.append(make(stack).search(2, None))
        if len(outcomes) == 2:
            a, b = outcomes
            assert a.min_layers == b.min_layers and (a.shortfall is None) == (b.shortfall is None)
            if a.shortfall is not None:
                assert a.shortfall[:2] == b.shortfall[:2] and np.array_equal(a.shortfall[2], b.shortfall[2])


def test_every_new_option_from_python_objects() -> None:
    spec = maskc.Spec(
        seq_len=1024,
        pattern=[
            maskc.Window(before=1, after=1, granularity="block"),
            maskc.Global(first="n / 512"),
            maskc.Random(per_row=3, exclude=["window", "global"]),
            maskc.Global(every="sqrt(n)", last=4, direction="columns"),
        ],
        layers=[maskc.LayerEntry(count=3, mixer="recurrent"), maskc.LayerEntry(count=1)],
    )
    assert spec.name == "spec" and spec.layer_mixers() == ["recurrent", "attention"]
    got = maskc.compile(spec).to_dense()
    assert np.array_equal(got, brute_force_mask(spec.to_data(), 1024))
    assert maskc.verify(spec, 4).reachable
    with pytest.raises(ValueError, match="has no attention pattern"):
        maskc.LayerEntry(mixer="identity", pattern=maskc.Dense())


def test_saved_ir_rebuilds_exclude_and_expressions(tmp_path: Path) -> None:
    for name, n in (("bigbird", 2048), ("sparse_transformer_strided", 4096)):
        pattern = maskc.compile(ROOT / "specs" / f"{name}.yaml", seq_len=n)
        pattern.save(tmp_path / f"{name}.npz")
        loaded = maskc.CompiledPattern.load(tmp_path / f"{name}.npz")
        assert np.array_equal(pattern.to_dense(), loaded.to_dense()), name


def test_a_file_stem_that_cannot_be_a_name(tmp_path: Path) -> None:
    """A spec without `name:` is named after its file; a stem holding a control or format character
    is refused as the file's fault (no `name:` line to point at), exit 2, and `name:` fixes it."""
    path = write_spec(tmp_path, "pattern: {window: {size: 8}}\n", name="bad\u202ename.yaml")
    result = run_cli("check", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the spec gives no name, and its file's stem cannot be one" in result.stderr
    assert "U+202E" in result.stderr and ":1:" not in result.stderr
    write_spec(tmp_path, "name: fine\npattern: {window: {size: 8}}\n", name="bad\u202ename.yaml")
    assert run_cli("check", path).returncode == 0
