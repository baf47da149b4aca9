"""The explorer's JSON API: pictures against the brute-force mask, numbers against maskc, located errors."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from PIL import Image
from specgen import brute_force_mask, spec_dicts

import maskc
from maskc.catalogue import schedule_densities
from maskc.draw import layers_needed, primitive_colour, tile_shade
from maskc.errors import MaskcWarning
from maskc.explain import growth
from maskc.explore import api
from maskc.retention import kv_retention

SOURCE = "page.yaml"
DENSE = "name: d\npattern: {dense: {}}\n"
LONGFORMER = """\
name: lf
seq_len: 1024
heads: 4
pattern:
  - window: {before: 32, after: 32}
  - global: {tokens: [0]}
layers:
  - {count: 6}
"""


def pixels(data_url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :]))).convert("RGB"))


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[k : k + 2], 16) for k in (1, 3, 5))


def lit_cells(image: np.ndarray) -> np.ndarray:
    """Cells drawn in a primitive's colour: neither white nor a stored tile's shade."""
    background = [(255, 255, 255), rgb(tile_shade("partial")), rgb(tile_shade("full"))]
    return ~np.any([np.all(image == colour, axis=-1) for colour in background], axis=0)


def mask_of(text: str, n: int | None = None) -> dict:
    status, body = api.mask({"yaml": text, "n": n}, SOURCE)
    assert status == 200, body
    return body


#: Valid at its n only (the offset reaches `every` at 2n): the page draws it with no growth figure.
_ONLY_AT_N = {
    "name": "only_at_n", "seq_len": 1, "block_size": 1, "causal": False,
    "pattern": {"global": {"offset": "n - 1", "every": 1, "direction": "both"}},
}  # fmt: skip


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_dicts(max_n=160, per_head=False))
@example((_ONLY_AT_N, 1))
def test_mask_picture_is_the_brute_force_mask(case: tuple[dict, int]) -> None:
    spec, n = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        body = mask_of(yaml.safe_dump(spec), n)
    (panel,) = body["panels"]
    image = pixels(panel["png"])
    assert image.shape == (n, n, 3) and body["scale"] == 1
    np.testing.assert_array_equal(lit_cells(image), brute_force_mask(spec, n))
    colours = {rgb(entry["colour"]) for entry in body["legend"]}
    assert {tuple(c) for c in image[lit_cells(image)]} <= colours


def test_large_n_is_drawn_in_cells_lit_when_any_pair_is() -> None:
    spec = {"name": "w", "pattern": [{"window": {"before": 5, "after": 0}}, {"stride": {"every": 97}}]}
    n = 1500
    body = mask_of(yaml.safe_dump(spec), n)
    scale = body["scale"]
    assert scale == 4 and body["cells"] == 375 and "4×4 tokens" in body["note"]
    side = body["cells"]
    padded = np.zeros((side * scale, side * scale), dtype=bool)
    padded[:n, :n] = brute_force_mask(spec, n)
    expected = padded.reshape(side, scale, side, scale).any(axis=(1, 3))
    np.testing.assert_array_equal(lit_cells(pixels(body["panels"][0]["png"])), expected)


def test_each_primitive_has_its_legend_colour() -> None:
    body = mask_of(LONGFORMER)
    names = [entry["name"] for entry in body["legend"]]
    assert names[0] == "window before=32 after=32" and body["legend"][0]["colour"] == primitive_colour(0)
    image = pixels(body["panels"][0]["png"])
    assert tuple(image[256, 256]) == rgb(primitive_colour(0))  # on the diagonal: the window
    assert tuple(image[0, 256]) == rgb(body["legend"][names.index("global tokens=[0] (rows)")]["colour"])


def test_numbers_are_maskc_s() -> None:
    body = mask_of(LONGFORMER, 2048)
    spec = maskc.parse_spec(LONGFORMER)
    densities = schedule_densities(spec, 2048)
    numbers = body["numbers"]
    assert numbers["density"] == densities.element and numbers["tile_density"] == densities.tile
    assert numbers["flops_vs_dense"].startswith(f"{densities.element:.4f}×")
    assert numbers["complexity"] == growth(spec, 2048).complexity == "O(n)"
    layout = maskc.compile(spec, seq_len=2048).layouts[0]
    (panel,) = body["panels"]
    assert (panel["tiles_stored"], panel["tiles_full"]) == (layout.nnz, layout.full_count)
    assert panel["tiles_total"] == 32 * 32 and panel["title"] == "layers 1–6"
    assert body["data"] == spec.to_data() and yaml.safe_load(body["yaml_fields"]["layers"]) == [{"count": 6}]


def test_one_panel_per_head_pattern_and_warnings() -> None:
    text = """\
name: heads
seq_len: 256
heads: 2
pattern: {window: {before: 4, after: 4, dilation: 2}}
head_patterns:
  - heads: [1]
    pattern: {stride: {every: 4}}
"""
    body = mask_of(text)
    assert [p["title"] for p in body["panels"]] == ["head 0", "head 1"]
    assert [p["heads"] for p in body["panels"]] == [[0], [1]]
    status, body = api.analysis({"yaml": text}, SOURCE)
    assert status == 200 and any("residue classes never exchange" in w for w in body["warnings"])


def test_analysis_is_verify_s() -> None:
    status, body = api.analysis({"yaml": LONGFORMER, "n": 1024}, SOURCE)
    assert status == 200, body
    report = maskc.verify(maskc.parse_spec(LONGFORMER), layers=6, seq_len=1024)
    assert body["min_layers"] == report.min_layers == 2 and body["depth"] == 6
    found = maskc.recognise(maskc.parse_spec(LONGFORMER), 1024)
    assert body["recognised"] == {"name": found.name, "score": round(float(found.score), 3), "reason": found.reason}
    assert found.name == "longformer" and "a symmetric window + a few global tokens" in found.reason


def test_reach_picture_is_draw_s_layer_count_map() -> None:
    text = "name: w\ncausal: true\npattern: {window: {before: 16, after: 0}}\n"
    status, body = api.reach({"yaml": text, "n": 256, "layers": 4}, SOURCE)
    assert status == 200, body
    need = layers_needed(maskc.parse_spec(text), 256, 4)
    lower = np.tril(np.ones((256, 256), dtype=bool), -1)
    assert body["pairs"] == int(lower.sum()) and body["reached"] == int(((need >= 1) & lower).sum())
    image = pixels(body["png"])
    grey = np.all(image == rgb(body["not_within"]), axis=-1)
    np.testing.assert_array_equal(grey, (need < 0) & lower)
    # A shallower L from the cached map: pairs needing more than L layers turn grey.
    status, shallow = api.reach({"yaml": text, "n": 256, "layers": 2}, SOURCE)
    grey = np.all(pixels(shallow["png"]) == rgb(shallow["not_within"]), axis=-1)
    np.testing.assert_array_equal(grey, ((need < 0) | (need > 2)) & lower)


def test_bad_spec_is_a_located_error() -> None:
    status, body = api.mask({"yaml": "name: x\nseq_len: 64\npattern:\n  - windw: {size: 3}\n"}, SOURCE)
    assert status == 422 and not body["ok"]
    assert body["error"]["line"] == 4
    assert body["error"]["message"].startswith("page.yaml:4: pattern[0]: unknown primitive")


def test_compile_error_is_located_in_the_text() -> None:
    text = "name: x\nseq_len: 100\npattern:\n  - window: {size: 3}\n  - global: {tokens: [200]}\n"
    status, body = api.mask({"yaml": text}, SOURCE)
    assert status == 422 and body["error"]["line"] == 5 and "not below seq_len 100" in body["error"]["message"]


def test_not_yaml_is_a_located_error() -> None:
    status, body = api.mask({"yaml": "name: x\npattern: [window\n", "n": 64}, SOURCE)
    assert status == 422 and body["error"]["line"] is not None and "not valid YAML" in body["error"]["message"]


def test_controls_data_comes_back_as_yaml() -> None:
    data = {"name": "c", "pattern": [{"window": {"before": 3, "after": 3}}, {"sink": {"count": 2}}]}
    request = {"data": data, "n": 64, "yaml_fields": {"layers": "- count: 3\n", "head_patterns": ""}}
    status, body = api.mask(request, SOURCE)
    assert status == 200, body
    assert maskc.parse_spec(body["yaml"]).to_data() == {**data, "layers": [{"count": 3}]} == body["data"]


def test_controls_errors_carry_the_yaml_they_are_located_in() -> None:
    status, body = api.mask({"data": {"name": "c", "pattern": {"window": {"before": -1}}}, "n": 64}, SOURCE)
    assert status == 422 and "before: -1" in body["yaml"].splitlines()[body["error"]["line"] - 1]
    status, body = api.mask({"data": {"name": "c", "pattern": {"dense": {}}}, "yaml_fields": {"layers": "[x"}}, SOURCE)
    assert status == 422 and "not valid YAML in the layers box" in body["error"]["message"]


@pytest.mark.parametrize(
    "request_body",
    [{}, {"yaml": 3}, {"yaml": DENSE, "n": "64"}, {"yaml": DENSE, "n": True}, {"data": []}, [1, 2]],
)
def test_malformed_requests_are_refused(request_body: object) -> None:
    with pytest.raises(api.RequestError):
        api.mask(request_body, SOURCE)


@pytest.mark.parametrize(("endpoint", "request_body"), [(api.mask, {"n": api.MAX_N + 1}), (api.reach, {"n": 4096})])
def test_sizes_beyond_the_explorer_s_limits_are_errors(endpoint: object, request_body: dict) -> None:
    status, body = endpoint({"yaml": LONGFORMER, **request_body}, SOURCE)  # type: ignore[operator]
    assert status == 422 and "in the explorer" in body["error"]["message"]


def test_start_n() -> None:
    assert api.start_n(LONGFORMER) == 1024
    assert api.start_n("name: x\npattern: {dense: {}}\n") == api.DEFAULT_N
    assert api.start_n("not: [a spec") == api.DEFAULT_N


def test_kv_cache_is_maskc_s_retention() -> None:
    text = "name: s\nseq_len: 1000\ncausal: true\npattern: [{sink: {count: 4}}, {window: {before: 99, after: 0}}]\n"
    text += "layers: [{count: 3}, {count: 1, pattern: {dense: {}}}]\n"
    status, body = api.analysis({"yaml": text}, SOURCE)
    assert status == 200, body
    kv = body["kv"]
    retentions = kv_retention(maskc.parse_spec(text), seq_len=1000)
    assert kv["layers"] == 4 and kv["full"] == 4000 and kv["total"] is None  # the dense layer keeps every key
    assert [(k["layers"], k["tokens"]) for k in kv["kinds"]] == [("1–3", 104), ("4", None)]
    assert kv["kinds"][0]["describe"] == retentions[0].describe(" per layer")
    # Scale 2 at n = 1000: row r shows step t = 2r + 1; a cell is kept when either of its keys is.
    image = pixels(kv["kinds"][0]["png"])
    kept = np.all(image == rgb(kv["colours"]["kept"]), axis=-1)
    for row in (0, 60, 499):
        t = min(999, 2 * row + 1)
        keys = np.zeros(1000, dtype=bool)
        keys[: t + 1] = retentions[0].keeps(t, np.arange(t + 1))
        np.testing.assert_array_equal(kept[row], keys.reshape(500, 2).any(axis=1))
        assert kept[row].sum() >= 1 and not kept[row, (t + 2) // 2 :].any()
