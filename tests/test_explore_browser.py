"""The explorer page in a real headless chromium: controls and YAML follow each other, the mask and
numbers change, a bad spec shows its located error, and the downloaded YAML compiles.

Without chromium these tests FAIL (CI installs it); MASKC_NO_BROWSER=1 skips them for a local run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from browser import browser_paths, chromium, idle, settle, text, wait_for

import maskc
from maskc.explore.server import ExplorerServer, serving

START = """\
name: explored
seq_len: 1024
pattern:
  - window: {before: 48, after: 48}
  - global: {tokens: [0, 1]}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[ExplorerServer]:
    with serving(START, "explored.yaml") as running:
        yield running


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def page(server: ExplorerServer, downloads: Path) -> Iterator[Any]:
    with chromium(downloads) as driver:
        driver.get(server.url)
        wait_for(lambda: idle(driver) and text(driver, "model-name") not in ("–", "computing…"), "the first analysis")
        yield driver


def mask_src(driver: Any) -> str:
    return driver.execute_script("return document.getElementById('mask-img-0').src")


def type_into(element: Any, typed: str) -> None:
    """Select what the field holds and type over it, as a person would."""
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(typed)


def set_editor(driver: Any, yaml_text: str) -> None:
    from selenium.webdriver.common.by import By

    type_into(driver.find_element(By.ID, "yaml"), yaml_text)
    settle(driver)


def test_first_view_shows_mask_numbers_and_model(page: Any) -> None:
    assert mask_src(page).startswith("data:image/png;base64,")
    assert text(page, "density").endswith("of (i, j) pairs active")
    assert text(page, "complexity").startswith("O(n)")
    assert text(page, "min-layers").startswith("2 at n = 1024")
    assert text(page, "model-name") == "longformer" and "symmetric window" in text(page, "model-reason")
    assert page.execute_script("return document.getElementById('on-window').checked")
    assert page.execute_script("return document.getElementById('p-window-before').value") == "48"
    assert page.execute_script("return document.getElementById('reach-img').src").startswith("data:image/png")


def test_the_kv_cache_a_decoder_keeps(page: Any) -> None:
    pattern = "[{sink: {count: 4}}, {window: {before: 59, after: 0}}]"
    set_editor(page, f"name: stream\nseq_len: 1024\ncausal: true\npattern: {pattern}\n")
    assert text(page, "kv-summary").startswith("1 layer of one cycle: 64 keys, against 1,024 for full attention")
    assert "4 sinks + 60 recent = 64 tokens per layer" in text(page, "kv-kinds")
    assert page.execute_script("return document.getElementById('kv-img-0').src").startswith("data:image/png")
    set_editor(page, START)  # the tests after this one start from the page's first spec


def test_toggling_a_primitive_changes_the_mask_numbers_and_yaml(page: Any) -> None:
    from selenium.webdriver.common.by import By

    before = (mask_src(page), text(page, "density"), text(page, "flops"), text(page, "tiles"))
    page.find_element(By.ID, "on-stride").click()
    settle(page)
    after = (mask_src(page), text(page, "density"), text(page, "flops"), text(page, "tiles"))
    assert all(a != b for a, b in zip(before, after)), (before, after)
    yaml_text = page.find_element(By.ID, "yaml").get_attribute("value")
    assert maskc.parse_spec(yaml_text).to_data()["pattern"][-1] == {"stride": {"every": 64}}
    assert "stride every=64" in text(page, "legend")
    page.find_element(By.ID, "on-stride").click()  # and back
    settle(page)
    assert (mask_src(page), text(page, "density")) == before[:2]


def test_a_slider_moves_the_spec(page: Any) -> None:
    from selenium.webdriver.common.by import By

    type_into(page.find_element(By.ID, "p-window-after"), "0")
    settle(page)
    data = maskc.parse_spec(page.find_element(By.ID, "yaml").get_attribute("value")).to_data()
    assert data["pattern"][0] == {"window": {"before": 48, "after": 0}}


def test_the_layers_slider_and_the_verdict(page: Any) -> None:
    from selenium.webdriver.common.by import By

    src = page.execute_script("return document.getElementById('reach-img').src")
    type_into(page.find_element(By.ID, "layers"), "1\n")
    settle(page)
    assert text(page, "verdict").startswith("1 layers: not every pair is reached; needs 2")
    assert page.execute_script("return document.getElementById('reach-img').src") != src


def test_yaml_edits_move_the_controls(page: Any) -> None:
    set_editor(page, "name: grid\nseq_len: 1024\npattern:\n  - axial: {width: 32}\n  - sink: {count: 4}\n")
    assert page.execute_script("return document.getElementById('on-axial').checked")
    assert page.execute_script("return document.getElementById('on-sink').checked")
    assert not page.execute_script("return document.getElementById('on-window').checked")
    assert page.execute_script("return document.getElementById('p-axial-width').value") == "32"
    assert "axial width=32" in text(page, "legend")


def test_a_bad_spec_shows_the_located_error_and_the_page_survives(page: Any) -> None:
    good_src = mask_src(page)
    set_editor(page, "name: bad\nseq_len: 1024\npattern:\n  - windw: {size: 8}\n")
    error = text(page, "error")
    assert error.startswith("explored.yaml:4: pattern[0]: unknown primitive 'windw' (did you mean 'window'?)")
    assert text(page, "bad-line") == "4"
    assert page.execute_script("return !document.getElementById('error-flag').hidden")
    assert "line 4:" in text(page, "error-flag")
    assert mask_src(page) == good_src  # the last good picture stays, dimmed
    stale = "return [...document.querySelectorAll('.result.stale')].map((e) => e.id)"
    assert page.execute_script(stale) == ["mask-area", "numbers-area", "kv-area", "reach-area"]
    set_editor(page, "name: fixed\nseq_len: 1024\npattern: {window: {size: 8}}\n")
    assert text(page, "error") == "" and mask_src(page) != good_src and page.execute_script(stale) == []
    assert page.execute_script("return document.getElementById('error-flag').hidden")


def test_per_head_overrides_as_yaml(page: Any) -> None:
    from selenium.webdriver.common.by import By

    set_editor(page, START)
    type_into(page.find_element(By.ID, "f-heads"), "2")
    type_into(page.find_element(By.ID, "f-head_patterns"), "- heads: [1]\n  pattern: {stride: {every: 16}}")
    settle(page)
    data = maskc.parse_spec(page.find_element(By.ID, "yaml").get_attribute("value")).to_data()
    assert data["heads"] == 2 and data["head_patterns"] == [{"heads": [1], "pattern": {"stride": {"every": 16}}}]
    assert page.execute_script("return document.querySelectorAll('#panels img').length") == 2
    assert text(page, "error") == ""


TWO_HEADS = START.replace("seq_len: 1024\n", "seq_len: 1024\nheads: 2\n")


def value_of(driver: Any, element_id: str, name: str = "value") -> Any:
    """A property of an element: its value, or `checked`, `hidden`, `disabled` …"""
    return driver.execute_script("return document.getElementById(arguments[0])[arguments[1]]", element_id, name)


def panels(driver: Any) -> list[dict[str, Any]]:
    """Each mask panel's heads, picture, and whether it is marked as the selected head's."""
    script = """return [...document.querySelectorAll('#panels .panel')].map((f) => ({
        heads: JSON.parse(f.dataset.heads), src: f.querySelector('img').src,
        selected: f.classList.contains('selected')}))"""
    return driver.execute_script(script)


def shown_spec(driver: Any) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    return maskc.parse_spec(driver.find_element(By.ID, "yaml").get_attribute("value")).to_data()


def choose_head(driver: Any, head: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    Select(driver.find_element(By.ID, "head-select")).select_by_value(str(head))


def test_a_head_override_made_with_the_controls(page: Any) -> None:
    from selenium.webdriver.common.by import By

    set_editor(page, TWO_HEADS)
    shared = shown_spec(page)["pattern"]
    (both,) = [p["src"] for p in panels(page)]
    density, tiles = text(page, "density"), text(page, "tiles")
    options = "return [...document.getElementById('head-select').options].map((o) => o.value)"
    assert page.execute_script(options) == ["0", "1"]
    choose_head(page, 1)
    assert not value_of(page, "head-override", "checked")
    assert "Head 1 uses the shared pattern" in text(page, "head-note")
    page.find_element(By.ID, "head-override").click()  # starts as a copy of the shared pattern
    settle(page)
    assert shown_spec(page)["head_patterns"] == [{"heads": [1], "pattern": shared}]
    assert value_of(page, "h-on-window", "checked") and value_of(page, "h-p-window-before") == "48"
    type_into(page.find_element(By.ID, "h-p-window-after"), "0")
    settle(page)
    data = shown_spec(page)
    own = [{"window": {"before": 48, "after": 0}}, {"global": {"tokens": [0, 1]}}]
    assert data["pattern"] == shared and data["head_patterns"] == [{"heads": [1], "pattern": own}]
    box = yaml.safe_load(page.find_element(By.ID, "f-head_patterns").get_attribute("value"))
    assert box == data["head_patterns"]
    head0, head1 = panels(page)
    assert (head0["heads"], head0["src"], head0["selected"]) == ([0], both, False)  # head 0 as it was
    assert head1["heads"] == [1] and head1["src"] != both and head1["selected"]
    assert text(page, "density") != density
    head0_tiles, head1_tiles = text(page, "tiles").split("; ")
    assert head0_tiles == tiles and head1_tiles != tiles
    page.find_element(By.ID, "h-on-stride").click()
    settle(page)
    assert shown_spec(page)["head_patterns"] == [{"heads": [1], "pattern": [*own, {"stride": {"every": 64}}]}]
    assert panels(page)[0]["src"] == both
    page.find_element(By.ID, "head-override").click()  # back to the shared pattern
    settle(page)
    assert "head_patterns" not in shown_spec(page) and [p["src"] for p in panels(page)] == [both]
    assert text(page, "density") == density and page.find_element(By.ID, "f-head_patterns").get_attribute("value") == ""


def test_the_head_controls_follow_the_yaml(page: Any) -> None:
    from selenium.webdriver.common.by import By

    set_editor(page, TWO_HEADS)
    choose_head(page, 1)
    type_into(page.find_element(By.ID, "f-head_patterns"), "- heads: [1]\n  pattern: {axial: {width: 32}}")
    settle(page)
    checked = [value_of(page, name, "checked") for name in ("head-override", "h-on-axial", "h-on-window")]
    assert checked == [True, True, False]
    assert value_of(page, "h-p-axial-width") == "32"
    assert [p["selected"] for p in panels(page)] == [False, True]
    choose_head(page, 0)
    assert not value_of(page, "head-override", "checked") and value_of(page, "head-prims", "hidden")
    assert [p["selected"] for p in panels(page)] == [True, False]
    combined = "{intersect: [{window: {size: 64}}, {stride: {every: 2}}]}"
    shared_by_two = f"heads: 3\nhead_patterns:\n  - heads: [1, 2]\n    pattern: {combined}\n"
    set_editor(page, TWO_HEADS.replace("heads: 2\n", "") + shared_by_two)
    choose_head(page, 2)
    assert value_of(page, "head-override", "checked") and value_of(page, "head-prims", "disabled")
    assert "edit it in the YAML box" in text(page, "head-note") and "shared by heads 1, 2" in text(page, "head-note")
    assert not value_of(page, "prims", "disabled")  # the shared pattern still fits
    page.find_element(By.ID, "head-override").click()  # head 2 leaves the entry; head 1 keeps it
    settle(page)
    assert [e["heads"] for e in shown_spec(page)["head_patterns"]] == [[1]]


def test_combinators_disable_the_primitive_controls(page: Any) -> None:
    set_editor(page, "name: c\nseq_len: 256\npattern: {intersect: [{window: {size: 64}}, {stride: {every: 2}}]}\n")
    assert page.execute_script("return document.getElementById('prims').disabled")
    assert "edit it in the YAML" in text(page, "controls-note")
    assert text(page, "error") == ""


def test_sizes_in_n_are_left_to_the_yaml(page: Any) -> None:
    set_editor(page, "name: e\nseq_len: 1024\npattern: {window: {before: n / 64, after: n / 64}}\n")
    assert page.execute_script("return document.getElementById('prims').disabled")
    assert text(page, "error") == "" and "window before=n / 64" in text(page, "legend")


def test_the_last_of_every_block_as_global_controls(page: Any) -> None:
    from selenium.webdriver.common.by import By

    fixed = "{block_local: {size: 128}}, {global: {every: 128, last: 8, direction: columns}}"
    set_editor(page, f"name: fixed\nseq_len: 1024\ncausal: true\npattern: [{fixed}]\n")
    assert not page.execute_script("return document.getElementById('prims').disabled")
    value = "return document.getElementById(arguments[0]).value"
    assert page.execute_script(value, "p-global-mode") == "every+last"
    assert page.execute_script(value, "p-global-last") == "8"
    type_into(page.find_element(By.ID, "p-global-last"), "4")
    settle(page)
    data = maskc.parse_spec(page.find_element(By.ID, "yaml").get_attribute("value")).to_data()
    assert data["pattern"][1] == {"global": {"every": 128, "last": 4, "direction": "columns"}}


def test_random_exclude_in_the_controls(page: Any) -> None:
    from selenium.webdriver.common.by import By

    pattern = "[{global: {first: 64}}, {random: {per_row: 2, exclude: [global]}}]"
    set_editor(page, f"name: bb\nseq_len: 1024\npattern: {pattern}\n")
    assert not page.execute_script("return document.getElementById('prims').disabled")
    assert page.execute_script("return document.getElementById('p-random-exclude').value") == "global"
    from selenium.webdriver.common.keys import Keys

    type_into(page.find_element(By.ID, "p-random-exclude"), Keys.BACK_SPACE)
    settle(page)
    data = maskc.parse_spec(page.find_element(By.ID, "yaml").get_attribute("value")).to_data()
    assert data["pattern"][1] == {"random": {"per_row": 2}}


def test_a_control_keeps_the_fields_it_does_not_show(page: Any) -> None:
    from selenium.webdriver.common.by import By

    set_editor(page, "name: image\ngrid: {shape: [32, 32]}\npattern: {neighborhood: {kernel: [5, 5]}}\n")
    page.find_element(By.ID, "f-causal").click()
    settle(page)
    data = maskc.parse_spec(page.find_element(By.ID, "yaml").get_attribute("value")).to_data()
    assert data["grid"] == {"shape": [32, 32]} and data["causal"] is True
    assert text(page, "error") == ""


def test_a_block_size_off_the_list_survives_a_control_change(page: Any) -> None:
    from selenium.webdriver.common.by import By

    set_editor(page, "name: small\nseq_len: 1024\nblock_size: 8\npattern: {window: {size: 64}}\n")
    assert page.execute_script("return document.getElementById('f-block_size').value") == "8"
    page.find_element(By.ID, "on-sink").click()
    settle(page)
    data = maskc.parse_spec(page.find_element(By.ID, "yaml").get_attribute("value")).to_data()
    assert data["block_size"] == 8 and data["pattern"][-1] == {"sink": {"count": 4}}
    assert text(page, "error") == ""
    sizes = page.execute_script("return [...document.getElementById('f-block_size').options].map((o) => o.value)")
    assert sizes == ["8", "16", "32", "64", "128", "256", "512"]


def test_download_gives_yaml_that_compiles(page: Any, downloads: Path) -> None:
    from selenium.webdriver.common.by import By

    set_editor(page, START)
    page.find_element(By.ID, "on-random").click()
    settle(page)
    shown = page.find_element(By.ID, "yaml").get_attribute("value")
    page.find_element(By.ID, "download").click()
    path = wait_for(lambda: next(iter(downloads.glob("explored*.yaml")), None), "the downloaded YAML")
    wait_for(lambda: path.read_text() == shown, "the download to complete")
    pattern = maskc.compile(path, seq_len=1024)
    assert pattern.spec.to_data()["pattern"][-1] == {"random": {"per_row": 2}}
    assert pattern.spec == maskc.parse_spec(shown)


def test_a_missing_browser_fails_unless_skipping_is_asked_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MASKC_NO_BROWSER", raising=False)
    with pytest.raises(pytest.fail.Exception, match=r"chromium and chromedriver \(Debian packages"):
        browser_paths(("no-such-chromium",), ("no-such-driver",), tmp_path)
    monkeypatch.setenv("MASKC_NO_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception, match="MASKC_NO_BROWSER=1"):
        browser_paths(("no-such-chromium",), ("no-such-driver",), tmp_path)
