"""Long rows and columns run as chunks, merged exactly (backends/triton/tables.py, chunks.py).

A global token's row walks every key tile and its column every query tile; the kernels cut such a
line into chunks that run as programs of their own and merge their partials (forward: by
log-sum-exp; dQ, dK and dV: by sums). The chunk size is forced small here so that small problems
split, and every check runs the split path (asserted) against the CPU backend in float64 under
Triton's interpreter: forward, lse and the gradients of q, k and v, with GQA, batches, per-head
patterns, empty rows, rows shorter than a chunk, rectangular calls and schedule passes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)

import maskc
from maskc.backends.triton import backward, chunks, forward, tables
from maskc.backends.triton.plans import plan_for
from maskc.errors import MaskcWarning
from maskc.grid import TileGrid
from maskc.ir.build import build_layout

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"

TOLERANCE = 1e-4

SPECS = {
    # Longformer: a window and global tokens 0 and 77 (long rows and long columns).
    "longformer": ({"pattern": [{"window": {"size": 20}}, {"global": {"tokens": [0, 77]}}]}, 150),
    # Per-head patterns: head 1 has no global token, so its lists of the long lines are short.
    "per-head": (
        {
            "heads": 2,
            "pattern": [{"window": {"size": 16}}, {"global": {"tokens": [3]}}],
            "head_patterns": [{"heads": [1], "pattern": {"window": {"before": 20, "after": 0}}}],
        },
        128,
    ),
    # Two rows attend every key and the others none: empty rows, and long rows among empty ones.
    "empty-rows": ({"pattern": {"global": {"tokens": [5, 70], "direction": "rows"}}}, 96),
    # Causal: the global token's row is short (it sees key 0 only) and its column long.
    "causal-sink": ({"causal": True, "pattern": [{"window": {"before": 15}}, {"global": {"tokens": [0]}}]}, 112),
}


@pytest.fixture
def split_launches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which launcher ("forward", "backward") launched a kernel on split tables, once per launch."""
    seen: list[str] = []
    for name, module in (("forward", forward), ("backward", backward)):

        def spy(walk_tables, groups, name=name, original=module.launch_programs):
            if walk_tables.split:
                seen.append(name)
            return original(walk_tables, groups)

        monkeypatch.setattr(module, "launch_programs", spy)
    return seen


@pytest.fixture
def chunks_of(monkeypatch: pytest.MonkeyPatch):
    """Force chunks of `tiles` tiles on every line longer than the median (tables' keys include it)."""

    def force(tiles: int) -> None:
        monkeypatch.setattr(tables, "CHUNK_TILES", tiles)
        monkeypatch.setattr(tables, "LONG_FACTOR", 1.0)

    return force


def _compile(name: str, heads: int = 2, tile: tuple[int, int] = (16, 16), schedule: str = "single"):
    data, n = SPECS[name]
    heads = data.get("heads", heads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec(name=name, **data), seq_len=n, block_size=tile, heads=heads, schedule=schedule)


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    assert torch.isfinite(got).all(), "non-finite values"
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


def _compare(pattern, batch: int, kv_heads: int, seed: int, **call) -> None:
    """Output, lse and the gradients of q, k, v (through out and lse) against the CPU backend in float64."""
    gen = torch.Generator().manual_seed(seed)
    heads, n = pattern.heads, pattern.n
    m = call.pop("m", n)
    nk = call.pop("nk", n)
    inputs = [torch.randn(s, generator=gen) for s in ((batch, heads, m, 16), (batch, kv_heads, nk, 16),
                                                       (batch, kv_heads, nk, 8))]  # fmt: skip
    d_out = torch.randn((batch, heads, m, 8), generator=gen)
    d_lse = torch.randn((batch, heads, m), generator=gen)
    results = {}
    for backend, dtype in (("cpu", torch.float64), ("triton", torch.float32)):
        leaves = [x.to(dtype).requires_grad_() for x in inputs]
        out, lse = maskc.attention(*leaves, pattern, backend=backend, return_lse=True, **call)
        finite = torch.isfinite(lse)
        loss = (out * d_out.to(dtype)).sum() + torch.where(finite, lse * d_lse.to(dtype), 0).sum()
        results[backend] = (out, lse, torch.autograd.grad(loss, leaves))
    (want_out, want_lse, want_grads), (out, lse, grads) = results["cpu"], results["triton"]
    assert torch.equal(torch.isinf(lse), torch.isinf(want_lse)), "rows without keys differ"
    finite = torch.isfinite(want_lse)
    assert _relative(out, want_out) < TOLERANCE
    assert _relative(lse[finite], want_lse[finite]) < TOLERANCE
    for name, got, want in zip("qkv", grads, want_grads):
        assert _relative(got, want) < TOLERANCE, f"d{name}"


def _splits(pattern, walk: str = "rows") -> bool:
    """Whether the kernels' tables of `walk` (the interpreter runs the pattern's own tile) split."""
    plan = plan_for(pattern)
    return plan.tables(walk, *plan.native_tile, torch.device("cpu")).split


@pytest.mark.parametrize(
    "name, batch, kv_heads, chunk",
    [
        ("longformer", 1, 2, 1),
        ("longformer", 2, 1, 3),  # GQA, a batch, chunks longer than most lines
        ("per-head", 1, 2, 2),
        ("empty-rows", 2, 1, 2),
        ("causal-sink", 1, 1, 4),
    ],
)
def test_split_lines_match_cpu_reference(chunks_of, split_launches, name, batch, kv_heads, chunk):
    chunks_of(chunk)
    pattern = _compile(name)
    _compare(pattern, batch, kv_heads, seed=chunk)
    assert split_launches.count("forward") == _splits(pattern, "rows")
    assert split_launches.count("backward") == _splits(pattern, "rows") + _splits(pattern, "columns") >= 1


def test_dk_and_dv_of_long_columns_are_summed_in_one_launch(chunks_of, monkeypatch):
    """A backward on split tables launches one sum for dQ's long rows and one for dK's and dV's long
    columns together (a launch is host time in every call), and both match the reference."""
    chunks_of(2)
    launched: list[int] = []
    original = backward._sum_chunks

    def sums(kernels, walk_tables, pairs, *args):
        launched.append(len(pairs))
        return original(kernels, walk_tables, pairs, *args)

    monkeypatch.setattr(backward, "_sum_chunks", sums)
    pattern = _compile("longformer")
    _compare(pattern, 1, 2, seed=9)
    assert sorted(launched) == [1, 2], launched


@pytest.mark.parametrize("name, kv_heads", [("longformer", 2), ("causal-sink", 1)])
def test_merges_sum_slices_of_columns_in_programs_of_their_own(chunks_of, monkeypatch, name, kv_heads):
    """With slices of 2 columns the forward's merge runs 4 programs a long row (value dim 8), dQ's sum
    8 (head dim 16) and dK's and dV's 8 + 4 in one launch: every slice stored where it belongs
    (Longformer splits rows and columns, the causal sink its column only)."""
    chunks_of(2)
    monkeypatch.setattr(chunks, "MERGE_COLUMNS", 2)
    columns: dict[str, list[int]] = {"forward": [], "backward": []}
    for label, module in (("forward", forward), ("backward", backward)):

        def spy(*widths: int, seen=columns[label]) -> int:
            seen.append(chunks.merge_columns(*widths))
            return seen[-1]

        monkeypatch.setattr(module, "merge_columns", spy)
    pattern = _compile(name)
    _compare(pattern, 1, kv_heads, seed=11)
    rows, lines = _splits(pattern, "rows"), _splits(pattern, "rows") + _splits(pattern, "columns")
    assert columns == {"forward": [2] * rows, "backward": [2] * lines} and lines, columns


def test_longformer_splits_rows_and_columns_by_default_at_long_lengths():
    """With the default settings a Longformer row and column of 1024 tiles become many chunks."""
    pattern = _compile("longformer")
    grid = TileGrid(16384, 16, 16)
    layout = build_layout(pattern.layouts[0].rule, grid)
    for walk in ("rows", "columns"):
        arrays = tables.walk_arrays([layout], walk)
        assert arrays["long_lines"][0] >= 1 and len(arrays["chunk_line"]) > 1
        median = np.median(_line_lengths([layout], walk))
        assert arrays["chunk_tiles"][0] == int(np.ceil(tables.CHUNK_FACTOR * median))


def test_rectangular_calls_split(chunks_of, split_launches):
    """q_offset (one per batch element) and k_offset: the window's long lines split and merge exactly."""
    chunks_of(2)
    pattern = _compile("longformer")
    _compare(pattern, 2, 2, seed=3, m=40, nk=150, q_offset=torch.tensor([0, 90]), k_offset=0)
    assert split_launches.count("forward") == 1 and split_launches.count("backward") == 2
    _compare(pattern, 1, 2, seed=4, m=60, nk=120, q_offset=60, k_offset=30)
    assert split_launches.count("forward") == 2 and split_launches.count("backward") == 4


def test_schedule_passes_split(chunks_of, split_launches):
    """A split schedule's passes run the same kernels on their own tables: a pass's long column splits."""
    chunks_of(2)
    rules = [{"window": {"before": 15}}, {"stride": {"every": 16}}, {"global": {"tokens": [0]}}]
    spec = {"causal": True, "pattern": rules}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec(name="passes", **spec), seq_len=128, block_size=16, schedule="split")
    _compare(pattern, 1, 1, seed=5)
    assert "backward" in split_launches


def _line_lengths(layouts, walk: str) -> np.ndarray:
    pointer = tables._NAMES[walk][0]
    return sum(np.diff(layout.split()[f"full_{pointer}"]) + np.diff(layout.split()[f"partial_{pointer}"])
               for layout in layouts)  # fmt: skip


def _chunk_walks(full: tuple[int, int], partial: tuple[int, int], first: int, last: int):
    """A chunk's part of a line's full and partial tiles, as the kernels cut it (`walk_part`), in Python."""

    def part(lo: int, hi: int, a: int, b: int) -> tuple[int, int]:
        return lo + min(max(a, 0), hi - lo), lo + min(max(b, 0), hi - lo)

    count = full[1] - full[0]
    return part(*full, first, last), part(*partial, first - count, last - count)


@pytest.mark.parametrize("name, tile, chunk", [("longformer", (16, 32), 2), ("per-head", (16, 16), 3),
                                               ("causal-sink", (32, 16), 1)])  # fmt: skip
@pytest.mark.parametrize("walk", ["rows", "columns"])
def test_chunks_cover_each_long_line_exactly_once(monkeypatch, name, tile, chunk, walk):
    """Every long line's full and partial tiles, in every layout, lie in exactly one of its chunks."""
    monkeypatch.setattr(tables, "CHUNK_TILES", chunk)
    monkeypatch.setattr(tables, "LONG_FACTOR", 1.0)
    pattern = _compile(name)
    grid = TileGrid(pattern.n, *tile)
    layouts = [build_layout(layout.rule, grid) for layout in pattern.layouts]
    arrays = tables.walk_arrays(layouts, walk)
    long_lines, order = int(arrays["long_lines"][0]), arrays["order"]
    assert long_lines > 0 and arrays["chunk_ptr"][-1] == len(arrays["chunk_line"])
    lines = int(arrays["lines"][0])
    for table in range(len(layouts)):
        for slot in range(long_lines):
            at = table * (lines + 1) + order[slot]
            full = (int(arrays["full_ptr"][at]), int(arrays["full_ptr"][at + 1]))
            partial = (int(arrays["partial_ptr"][at]), int(arrays["partial_ptr"][at + 1]))
            seen = {"full": [], "partial": []}
            for c in range(arrays["chunk_ptr"][slot], arrays["chunk_ptr"][slot + 1]):
                assert arrays["chunk_line"][c] == slot
                first = int(arrays["chunk_start"][c])
                (f0, f1), (p0, p1) = _chunk_walks(full, partial, first, first + chunk)
                assert (f1 - f0) + (p1 - p0) <= chunk
                seen["full"] += arrays["full_idx"][f0:f1].tolist()
                seen["partial"] += arrays["partial_idx"][p0:p1].tolist()
            assert seen["full"] == arrays["full_idx"][full[0] : full[1]].tolist()
            assert seen["partial"] == arrays["partial_idx"][partial[0] : partial[1]].tolist()


def test_chunk_factor_zero_runs_long_lines_whole(monkeypatch):
    """CHUNK_FACTOR = 0 (bench_triton.py --chunk-factor 0): long lines stay long and whole."""
    monkeypatch.setattr(tables, "CHUNK_FACTOR", 0.0)
    pattern = _compile("longformer")
    layout = build_layout(pattern.layouts[0].rule, TileGrid(16384, 16, 16))
    arrays = tables.walk_arrays([layout], "rows")
    assert arrays["long_lines"][0] >= 1 and len(arrays["chunk_line"]) == 0


def test_no_chunks_without_long_lines():
    """A window has no long line: its tables have no chunks and the kernels run unsplit."""
    spec = maskc.Spec(name="window", pattern={"window": {"size": 20}})
    layout = build_layout(maskc.compile(spec, seq_len=256, block_size=16).layouts[0].rule, TileGrid(256, 16, 16))
    for walk in ("rows", "columns"):
        arrays = tables.walk_arrays([layout], walk)
        assert arrays["long_lines"][0] == 0 and len(arrays["chunk_line"]) == 0


def test_typical_line_leaves_empty_lines_out():
    """Empty lines cost nothing: the typical line is the median of the busy ones."""
    lengths = np.array([0, 0, 0, 0, 0, 512, 500, 480])
    assert tables.typical_line(lengths) == 500
    assert tables.typical_line(np.zeros(4, dtype=np.int64)) == 0.0
    assert tables.chunk_size(lengths) == int(np.ceil(tables.CHUNK_FACTOR * 500))


def test_gathered_pass_columns_are_not_cut_into_one_tile_chunks():
    """The fixed pattern's gathered-keys pass has a few busy key columns among many empty ones; chunks
    sized by the median of all columns (0) were one tile each, whose partial sums cost more than
    the tiles (bench/NOTES.md)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        spec = SPEC_DIR / "sparse_transformer_fixed.yaml"
        pattern = maskc.compile(spec, seq_len=8192, block_size=64, schedule="auto")
    from maskc.backends.triton.passes import _pass_patterns

    passes = [p for group in _pass_patterns(pattern) for p in group]
    assert len(passes) > 1, "the fixed pattern runs as passes"
    for p in passes:
        arrays = tables.walk_arrays(plan_for(p).layouts(64, 128), "columns")
        assert len(arrays["chunk_line"]) == 0 or arrays["chunk_tiles"][0] > 1
