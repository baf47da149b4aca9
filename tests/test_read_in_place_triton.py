"""Passes read in place (backends/triton/passes.py): a pass whose orders are reorderings of axes
runs on q, k, v as they are, its kernels loading and storing the rows its positions map to
(gathers.py `row_map`, kernels/common.py `mapped_rows`). Under Triton's interpreter, against the
CPU reference in float64 and against the same pass gathered (MASKC_TRITON_READ_IN_PLACE=0):
forward, lse and the gradients of q, k and v, for residue orders (two digits), a 2-D grid's tiled
order (four), with GQA and with long lines cut into chunks (the row maps of up to six digits a
3-D grid needs: tests/test_gathers.py). Each case asserts that a pass is read in place, so none
can pass by gathering."""

from __future__ import annotations

import warnings

import pytest
import torch
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)
from test_schedule_triton import check_triton

import maskc
from maskc.backends.triton import tables
from maskc.backends.triton.passes import _pass_patterns
from maskc.backends.triton.plans import plan_for
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
    grads = torch.autograd.grad((out * torch.randn(out.shape, generator=gen)).sum(), (q, k, v))
    return [out, lse, *grads]


@pytest.mark.parametrize("name", sorted(CASES))
def test_in_place_matches_reference_and_gather(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data, n = CASES[name]
    pattern = _compile(name, data, n, heads=4)
    assert _in_place_passes(pattern) > 0, "no pass is read in place"
    check_triton(pattern, heads=4, kv_heads=2)
    in_place = _outputs(pattern, 4, 2)
    monkeypatch.setenv("MASKC_TRITON_READ_IN_PLACE", "0")
    gathered_pattern = _compile(f"{name}-gathered", data, n, heads=4)  # a new pattern: its passes gather
    assert _in_place_passes(gathered_pattern) == 0
    for got, want in zip(in_place, _outputs(gathered_pattern, 4, 2)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_in_place_grid_in_boxes() -> None:
    pattern = _compile("natten-2d", NATTEN_2D, None, heads=2)
    assert _in_place_passes(pattern) > 0
    check_triton(pattern, heads=2, kv_heads=1)


def test_in_place_long_lines_as_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A global token's column in a pass read in place: its chunks' sums are stored at mapped rows."""
    monkeypatch.setattr(tables, "CHUNK_TILES", 1)
    monkeypatch.setattr(tables, "LONG_FACTOR", 1.0)
    data = {"pattern": [{"axial": {"width": 8}}, {"global": {"tokens": [3]}}]}
    pattern = _compile("axial-global", data, 64, heads=2)
    assert _in_place_passes(pattern) > 0
    check_triton(pattern, heads=2, kv_heads=1)
