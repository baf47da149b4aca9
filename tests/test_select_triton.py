"""The top-k selection kernel (backends/triton/kernels/select.py) in Triton's interpreter, against
maskc.selection's stable sort and the definition: ties, NaN and infinite scores, rows with fewer
candidates than the count, rows split over programs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)
from test_selection import _brute_force

from maskc import registry
from maskc.backends.triton.selection import LARGEST_BLOCKS, select_top, select_top_blocks
from maskc.errors import BackendError
from maskc.selection import select_blocks, sort_select


def _scores(groups: int, blocks: int, levels: int, seed: int) -> torch.Tensor:
    """Scores from few levels, so that many tie (−0 with +0 too); some NaN and infinite."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(-levels, levels, (groups, blocks, blocks), generator=gen).float()
    scores = scores * (torch.rand(scores.shape, generator=gen) < 0.5).float().mul(2).sub(1)
    special = torch.rand(groups, blocks, blocks, generator=gen)
    scores[special < 0.05] = float("nan")
    scores[(special >= 0.05) & (special < 0.08)] = float("-inf")
    scores[(special >= 0.08) & (special < 0.1)] = float("inf")
    return scores


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.sampled_from([1, 2, 5, 17, 40]),
    st.integers(1, 20),
    st.integers(1, 6),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_kernel_selects_as_the_stable_sort(
    groups: int, blocks: int, count: int, levels: int, causal: bool, seed: int
) -> None:
    scores = _scores(groups, blocks, levels, seed)
    assert torch.equal(select_top_blocks(scores, count, causal), sort_select(scores, count, causal))


def test_rows_longer_than_one_tile_of_rows() -> None:
    """At 300 blocks a program holds 8 rows of 512 padded blocks: rows past the first program's."""
    scores = _scores(2, 300, 50, 1)
    for causal in (True, False):
        assert torch.equal(select_top_blocks(scores, 16, causal), sort_select(scores, 16, causal))


def test_selection_through_the_registry_is_the_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offered for CPU tensors, the kernel is what maskc.selection.select_blocks runs, and it gives the
    definition (block means, float64 scores ranked, ties to the lower block)."""
    calls = []

    def counted(*args):
        calls.append(args)
        return select_top_blocks(*args)

    monkeypatch.setitem(registry._KERNELS, ("select_top", "cpu"), counted)
    gen = torch.Generator().manual_seed(5)
    q, k = torch.randn(1, 2, 100, 4, generator=gen), torch.randn(1, 2, 100, 4, generator=gen)
    for causal in (True, False):
        got = select_blocks(q, k, SimpleNamespace(blocks=3, share="head"), 16, causal)
        assert torch.equal(got, _brute_force(q, k, 3, 16, causal))
    assert len(calls) == 2


def test_scores_the_kernel_does_not_take_are_left_to_torch_and_bad_input_is_named() -> None:
    assert select_top_blocks(torch.zeros(1, LARGEST_BLOCKS + 1, LARGEST_BLOCKS + 1), 1, True) is None
    assert select_top_blocks(torch.zeros(1, 3, 3, dtype=torch.float64), 1, True) is None
    assert select_top_blocks(torch.zeros(1, 3, 4), 1, True) is None
    assert select_top_blocks(torch.zeros(3), 1, True) is None
    with pytest.raises(BackendError, match="float32 scores"):
        select_top(torch.zeros(1, 3, 3, dtype=torch.float64), 1, True)
    with pytest.raises(BackendError, match="at least one block"):
        select_top(torch.zeros(1, 3, 3), 0, True)


def test_the_op_passes_torch_library_checks() -> None:
    """Schema, fake tensor (shape, dtype, contiguity) and torch.compile's dispatch agree with the op."""
    scores = _scores(2, 5, 3, 0)
    torch.library.opcheck(select_top, (scores, 2, True))
