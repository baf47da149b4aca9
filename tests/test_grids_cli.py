"""Grid specs on the command line: explain names NATTEN and STA, show draws one query on the canvas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from clitools import run_cli, write_spec
from specgen import brute_force_mask

import maskc
from maskc.draw_grid import ascii_query
from maskc.explain import explain

NATTEN = """\
name: natten
grid: {shape: [12, 16], order: {tiles: [4, 4]}, text: 2}
pattern:
  neighborhood: {kernel: [5, 3]}
"""


def test_explain_names_natten_and_sta_with_their_complexity() -> None:
    natten = maskc.Spec(name="n", grid={"shape": [32, 32]}, pattern={"neighborhood": {"kernel": [7, 5]}})
    report = explain(natten)
    assert report.growth is not None and report.growth.complexity == "O(n)"
    assert report.growth.n_doubled == 2 * 32 * 32
    assert report.families and "NATTEN" in report.families[0] and "35 grid keys" in report.families[0]
    sta = maskc.Spec(
        name="s",
        grid={"shape": [4, 8, 8], "order": {"tiles": [2, 4, 4]}},
        pattern={"tiles": {"tile": [2, 4, 4], "kernel": [2, 8, 8]}},
    )
    report = explain(sta)
    assert "STA" in report.families[0] and "128 grid keys" in report.families[0]
    assert report.growth is not None and report.growth.complexity == "O(n)"
    text = "\n".join(report.lines())
    assert "recognised" in text and "sliding-tile attention" in text


def test_show_query_draws_the_neighbourhood_on_the_canvas(tmp_path: Path) -> None:
    spec = maskc.load(write_spec(tmp_path, NATTEN))
    mask = brute_force_mask(spec.to_data(), spec.seq_len or 0)
    canvas = spec.grid.canvas()
    query = int(canvas.positions([np.int64(0), np.int64(15)]))
    lines = ascii_query(spec, "0,15").splitlines()
    assert "attends 15 of 192 grid cells, 2 of 2 text tokens" in lines[0]
    picture = np.array([list(line) for line in lines[1:]])
    assert picture.shape == (12, 16) and picture[0, 15] == "@"
    drawn = picture != "."
    keys = mask[query, : canvas.cells]
    on_canvas = np.zeros((12, 16), dtype=bool)
    cells = canvas.coords(np.arange(canvas.cells))
    on_canvas[cells[0], cells[1]] = keys
    assert np.array_equal(drawn, on_canvas)
    png = tmp_path / "q.png"
    done = run_cli("show", str(tmp_path / "spec.yaml"), "--query", "3,4", "--png", str(png))
    assert done.returncode == 0, done.stderr
    assert png.stat().st_size > 1000


def test_grid_cli_errors_exit_2(tmp_path: Path) -> None:
    path = write_spec(tmp_path, NATTEN)
    for args in (("--query", "12,0"), ("--query", "1,2,3"), ("--query", "a,b")):
        done = run_cli("show", path, *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr and "--query" in done.stderr
    bad = write_spec(tmp_path, NATTEN.replace("[5, 3]", "[5, 4]"), "bad.yaml")
    done = run_cli("check", bad)
    assert done.returncode == 2 and "bad.yaml:4" in done.stderr and "even" in done.stderr
    longformer = run_cli("show", "specs/longformer.yaml", "--query", "5")
    assert longformer.returncode == 2 and "declares no grid" in longformer.stderr
