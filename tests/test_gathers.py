"""Pass orders as axis reorderings (maskc/schedule/axes.py, backends/triton/gathers.py): the strided
copy against the index gather it replaces, and the kernels' row maps against the order itself."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import maskc
from maskc.backends.triton.gathers import axis_order
from maskc.backends.triton.passes import PassIndex, in_place_rows
from maskc.errors import MaskcWarning
from maskc.schedule import schedule_of
from maskc.schedule.axes import KERNEL_DIGITS, in_place_maps, mapped_rows, row_map
from maskc.schedule.plan import copied_rows, schedule_reasons


def _reordering(dims: list[int], perm: list[int]) -> np.ndarray:
    """Positions of an array of `dims` (row-major), its axes walked in `perm`: an axis reordering."""
    return np.arange(math.prod(dims)).reshape(dims).transpose(perm).ravel()


@st.composite
def reorderings(draw: st.DrawFn) -> np.ndarray:
    dims = draw(st.lists(st.integers(1, 6), min_size=1, max_size=KERNEL_DIGITS))
    perm = draw(st.permutations(range(len(dims))))
    return _reordering(dims, list(perm))


def _index_gather(x: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    return x.index_select(2, torch.as_tensor(p))


@settings(max_examples=200, deadline=None)
@given(reorderings())
def test_every_axis_reordering_is_found_and_gathers_as_the_index(p: np.ndarray) -> None:
    found = axis_order(p)
    if len(p) < 2 or np.array_equal(p, np.arange(len(p))):
        assert found is None  # nothing to gather: the identity keeps its rows
        return
    assert found is not None, p
    x = torch.randn(2, 3, len(p), 4)
    assert torch.equal(found.gather(x), _index_gather(x, p))


@settings(max_examples=200, deadline=None)
@given(reorderings())
def test_row_maps_read_every_axis_reordering(p: np.ndarray) -> None:
    """What a kernel computes from the row map (numpy's copy of `mapped_rows`) is the order itself."""
    found = axis_order(p)
    if found is None:
        return
    rows = row_map(found.digits)
    assert rows is not None and len(rows) == 3 * KERNEL_DIGITS
    assert np.array_equal(mapped_rows(rows, np.arange(len(p))), p)
    assert in_place_maps(p, False, np.arange(len(p)), True, len(p)) == (rows, row_map(None))


def test_row_maps_of_token_order_and_of_copies() -> None:
    assert np.array_equal(mapped_rows(row_map(None), np.arange(7)), np.arange(7))
    too_many = axis_order(_reordering([2] * (KERNEL_DIGITS + 1), list(range(KERNEL_DIGITS, -1, -1))))
    assert too_many is not None and row_map(too_many.digits) is None  # more digits than a kernel reads
    subset = np.array([0, 4, 8, 1, 5, 9])
    assert in_place_maps(subset, False, np.arange(12), True, 12) is None  # a subset: copied
    assert in_place_maps(np.arange(12), True, np.arange(12), True, 12) is None  # token order: nothing to read


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 40).flatmap(lambda n: st.permutations(range(n))))
def test_any_order_found_gathers_exactly(p: list[int]) -> None:
    """A random permutation is rarely an axis reordering; whatever is returned must be exact."""
    p = np.array(p)
    found = axis_order(p)
    if found is not None:
        x = torch.randn(1, 2, len(p), 3)
        assert torch.equal(found.gather(x), _index_gather(x, p))


@pytest.mark.parametrize(
    "p",
    [
        np.array([0, 2, 4, 1, 3]),  # residue order with n not a multiple of the modulus
        np.array([1, 0, 2, 3]),  # not starting at 0
        np.array([0, 1, 3, 2]),  # a swap inside a run
        np.arange(6)[::-1].copy(),  # reversed
        np.array([0, 4, 8, 1, 5, 9]),  # a subset (gathered keys), not a permutation of 0 … n − 1
    ],
)
def test_orders_that_are_not_axis_reorderings_keep_the_index(p: np.ndarray) -> None:
    assert axis_order(p) is None


def test_gradients_match_the_index_gather() -> None:
    p = _reordering([4, 3, 5], [2, 0, 1])
    found = axis_order(p)
    x = torch.randn(1, 2, len(p), 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 2, len(p), 3, dtype=torch.float64)
    (grad_axes,) = torch.autograd.grad((found.gather(x) * y).sum(), x)
    (grad_index,) = torch.autograd.grad((_index_gather(x, p) * y).sum(), x)
    assert torch.equal(grad_axes, grad_index)


@pytest.mark.parametrize(
    ("spec", "n", "lowering"),
    [
        ("specs/sparse_transformer_strided.yaml", 4096, "residue"),
        ("specs/natten_2d.yaml", None, "tiled"),
    ],
)
def test_the_lowerings_orders_take_the_strided_copy(
    spec: str, n: int | None, lowering: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The residue and tiled passes the cost model picks are axis reorderings: read in place by
    default, charged no copy, and when gathered (MASKC_TRITON_READ_IN_PLACE=0) never by the index
    gather (whose backward is a scatter-add)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(spec, seq_len=n, schedule="auto")
    monkeypatch.delenv("MASKC_TRITON_READ_IN_PLACE", raising=False)  # the default: read in place
    passes = [p for s in schedule_of(pattern) for p in s.passes if p.lowering == lowering]
    assert passes, f"{spec}: the cost model chose no {lowering} pass"
    for p in passes:
        assert in_place_rows(p, pattern.n, pattern.n) is not None
        assert copied_rows(p, pattern.n) == 0 < p.gathered_rows() and p.in_place
        built = PassIndex.build(p, pattern.n, pattern.n, torch.device("cpu"), in_place=False)
        for index, axes, order in ((built.q, built.q_axes, p.q_index), (built.k, built.k_axes, p.k_index)):
            if index is None:
                continue
            assert axes is not None, f"{spec}: a {p.lowering} order was not recognised"
            x = torch.randn(1, 1, pattern.n, 2)
            assert torch.equal(axes.gather(x), _index_gather(x, order))


def test_dilated_window_runs_in_residue_order_read_in_place() -> None:
    """Charged no copy, the dilated window's residue order costs half its single pass (bench/NOTES.md:
    measured 0.387 against 0.276 efficiency), so the cost model takes it and says why."""
    spec = maskc.Spec(name="dilated", pattern={"window": {"before": 256, "after": 256, "dilation": 2}})
    pattern = maskc.compile(spec, seq_len=32768, schedule="auto")
    (schedule,) = schedule_of(pattern)
    assert [p.label for p in schedule.passes] == ["residue mod 2"] and schedule.passes[0].in_place
    assert schedule.predicted_work == schedule.kernel_work() < schedule.single_work  # nothing copied or merged
    assert "the Triton kernels read its order in place" in "\n".join(schedule_reasons(pattern, (schedule,)))
