"""Passes read in place (backends/triton/passes.py) and run in turn (turns.py).

A pass whose orders are reorderings of axes runs on q, k, v as they are, its kernels loading and
storing the rows its positions map to (maskc/schedule/axes.py `row_map`, kernels/common.py
`mapped_rows`); a schedule whose passes all do so (or keep token order) runs them in turn, each
going on from the last's (out, lse), with no merge. Under Triton's interpreter, against the CPU
reference in float64 and against the same passes gathered (MASKC_TRITON_READ_IN_PLACE=0) or merged
(MASKC_TRITON_PASSES_IN_TURN=0): forward, lse and the gradients of q, k and v (with an lse
gradient), for residue orders (two digits), a 2-D grid's tiled order (four), with GQA and with long
lines cut into chunks (the six-digit row maps of a 3-D grid's tiled order are checked against the
order in numpy: tests/test_gathers.py).
Each case asserts the path it tests (a pass read in place; no merge), so none passes by another."""

from __future__ import annotations

import warnings

import pytest
import torch
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)
from test_kernel_variants_triton import _forced
from test_schedule_triton import check_triton

import maskc
from maskc.backends.triton import backward, forward, passes, tables, tuning
from maskc.backends.triton.passes import _pass_patterns
from maskc.backends.triton.plans import plan_for
from maskc.backends.triton.turns import PassesInTurn
from maskc.errors import MaskcWarning

CASES = {
    # window ∪ stride: the stride's pass in residue order (i mod 8)
    "strided": ({"causal": True, "pattern": [{"window": {"before": 8, "after": 0}}, {"stride": {"every": 8}}]}, 64),
    # rows ∪ columns of an 8-wide canvas: the columns in residue order
    "axial": ({"pattern": {"axial": {"width": 8}}}, 64),
    # every other key within 6: the residue order mod 2
    "dilated": ({"pattern": {"window": {"size": 6, "dilation": 2}}}, 64),
}
#: A 2-D neighbourhood on a row-major grid, run in 2 × 8 boxes: four digits (against the reference only).
NATTEN_2D = {"grid": {"shape": [16, 16]}, "pattern": {"neighborhood": {"kernel": [5, 5]}}}


def _compile(name: str, data: dict, n: int | None, heads: int) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec(name=name, **data), seq_len=n, block_size=16, heads=heads, schedule="split")


def _in_place_passes(pattern: maskc.CompiledPattern) -> int:
    return sum(plan_for(p).mapped for passes in _pass_patterns(pattern) for p in passes)


def _outputs(pattern: maskc.CompiledPattern, heads: int, kv_heads: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    n, d = pattern.n, 16
    q, k, v = (torch.randn(1, h, n, d, generator=gen).requires_grad_() for h in (heads, kv_heads, kv_heads))
    out, lse = maskc.attention(q, k, v, pattern, backend="triton", return_lse=True)
    loss = (out * torch.randn(out.shape, generator=gen)).sum() + (lse * torch.randn(lse.shape, generator=gen)).sum()
    return [out, lse, *torch.autograd.grad(loss, (q, k, v))]


@pytest.fixture
def merges(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many merges the passes ran (one entry per merge)."""
    seen: list[int] = []

    def counted(*args, original=passes.fused_merge):
        seen.append(1)
        return original(*args)

    monkeypatch.setattr(passes, "fused_merge", counted)
    return seen


@pytest.mark.parametrize("name", sorted(CASES))
def test_in_place_matches_reference_and_gather(name: str, merges: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    data, n = CASES[name]
    pattern = _compile(name, data, n, heads=4)
    assert _in_place_passes(pattern) > 0, "no pass is read in place"
    check_triton(pattern, heads=4, kv_heads=2)
    assert not merges, "every pass reads q, k, v as they are: they run in turn, unmerged"
    in_place = _outputs(pattern, 4, 2)
    monkeypatch.setenv("MASKC_TRITON_PASSES_IN_TURN", "0")
    merged = _outputs(pattern, 4, 2)
    assert merges or len(_pass_patterns(pattern)[0]) == 1, "merged on request"
    monkeypatch.setenv("MASKC_TRITON_READ_IN_PLACE", "0")
    gathered_pattern = _compile(f"{name}-gathered", data, n, heads=4)  # a new pattern: its passes gather
    assert _in_place_passes(gathered_pattern) == 0
    for other in (merged, _outputs(gathered_pattern, 4, 2)):
        for got, want in zip(in_place, other):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_in_place_grid_in_boxes() -> None:
    pattern = _compile("natten-2d", NATTEN_2D, None, heads=2)
    assert _in_place_passes(pattern) > 0
    check_triton(pattern, heads=2, kv_heads=1)


@pytest.mark.parametrize(
    ("name", "data", "n"),
    [
        # a global token's row and column in their own passes (gathered), the columns read in place
        ("axial-global", {"pattern": [{"axial": {"width": 8}}, {"global": {"tokens": [3]}}]}, 64),
        # run in turn: the residue pass's lines are cut (the pass that goes on from it: next test)
        ("strided-long", CASES["strided"][0], 256),
    ],
)
def test_in_place_long_lines_as_chunks(
    name: str, data: dict, n: int, merges: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long lines cut into one-tile chunks: their sums and merges store at mapped rows (and add to,
    or go on from, the earlier passes' rows when the passes run in turn)."""
    monkeypatch.setattr(tables, "CHUNK_TILES", 1)
    monkeypatch.setattr(tables, "LONG_FACTOR", 1.0)
    split: dict[str, list[bool]] = {"forward": [], "backward": []}
    for kind, module in (("forward", forward), ("backward", backward)):

        def spy(walk_tables, groups, kind=kind, original=module.launch_programs):
            split[kind].append(walk_tables.split)
            return original(walk_tables, groups)

        monkeypatch.setattr(module, "launch_programs", spy)
    pattern = _compile(name, data, n, heads=2)
    assert _in_place_passes(pattern) > 0
    check_triton(pattern, heads=2, kv_heads=1)
    assert any(split["forward"]) and any(split["backward"]), "no line was cut into chunks"
    assert bool(merges) == (name == "axial-global"), "passes that read q, k, v as they are run in turn"


@pytest.mark.parametrize("variant", ["plain", "atomic dQ, timed twice"])
def test_going_on_pass_with_long_lines(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The passes in reverse order, so that the pass that goes on from the earlier one is the one whose
    long lines are cut into chunks: its chunk merge takes the earlier rows, its chunk sums add to the
    earlier gradients (asserted by spies), against the CPU reference. With atomic dQ the adding is the
    accumulator's; timed twice, every tuning candidate runs twice, as the tuner runs them on a GPU:
    timings must not go on from, or add to, the call's own buffers."""
    monkeypatch.setattr(tables, "CHUNK_TILES", 1)
    monkeypatch.setattr(tables, "LONG_FACTOR", 1.0)
    if variant != "plain":
        _forced(monkeypatch, atomic_dq=True)
        native = tuning.candidates
        monkeypatch.setattr(tuning, "candidates", lambda *args, **kwargs: native(*args, **kwargs) * 2)
        monkeypatch.setattr(tuning, "_timings", lambda options, run: {c: [run(c), run(c)] and i for i, c in
                                                                      enumerate(options)})  # fmt: skip
        monkeypatch.setattr(tuning, "_CHOSEN", {})
    going_on_split: list[bool] = []
    adding_sums: list[bool] = []
    state = {"going_on": False}

    def launch_forward(*args, original=forward.launch_forward, **kwargs):
        state["going_on"] = kwargs.get("going_on", False)
        return original(*args, **kwargs)

    def launch_programs(walk_tables, groups, original=forward.launch_programs):
        going_on_split.append(state["going_on"] and walk_tables.split)
        return original(walk_tables, groups)

    def sum_chunks(*args, original=backward._sum_chunks):
        adding_sums.append(args[-1])  # its last argument: add to what the gradient holds
        return original(*args)

    monkeypatch.setattr(forward, "launch_forward", launch_forward)
    monkeypatch.setattr(forward, "launch_programs", launch_programs)
    monkeypatch.setattr(backward, "_sum_chunks", sum_chunks)
    pattern = _compile("strided-reversed", CASES["strided"][0], 256, heads=2)
    plans = tuple(plan_for(p) for p in _pass_patterns(pattern)[0])[::-1]
    gen = torch.Generator().manual_seed(7)
    inputs = [torch.randn(1, h, pattern.n, 16, generator=gen) for h in (2, 1, 1)]
    weights = torch.randn(1, 2, pattern.n, 16, generator=gen), torch.randn(1, 2, pattern.n, generator=gen)
    results = []
    for run in ("triton", "cpu"):
        leaves = [x.double().requires_grad_() if run == "cpu" else x.clone().requires_grad_() for x in inputs]
        if run == "triton":
            out, lse = PassesInTurn.apply(*leaves, plans, 16**-0.5)
        else:
            out, lse = maskc.attention(*leaves, pattern, backend="cpu", return_lse=True)
        loss = (out * weights[0].to(out.dtype)).sum() + (lse * weights[1].to(lse.dtype)).sum()
        results.append([out, lse, *torch.autograd.grad(loss, leaves)])
    for got, want in zip(*results):
        assert ((got.double() - want).norm() / want.norm()).item() < 1e-4
    assert any(going_on_split), "the pass that goes on was not cut into chunks"
    assert any(adding_sums), "no chunk sum added to an earlier pass's gradient"
