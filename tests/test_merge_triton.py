"""The fused merge of pass outputs (backends/triton/merge.py) against the torch merge
(maskc.schedule.merge.merge_passes) under TRITON_INTERPRET=1: values and gradients of outputs and
lses, in float64 and float32, for passes that cover rows partly, more than once (across passes
and inside one), not at all, or with no key (lse = −inf), each pass padded past its rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)

from maskc.backends.triton.merge import MergeTables, fused_merge
from maskc.schedule.merge import merge_passes

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def _inputs(
    q_indices: list[np.ndarray],
    pads: list[int],
    shape: tuple[int, int, int],
    dtype: torch.dtype,
    seed: int,
    dead: float = 0.2,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Random padded pass outputs (B, H, nq + pad, D) and lses, a fraction `dead` of the lses −inf."""
    gen = torch.Generator().manual_seed(seed)
    batch, heads, dim = shape
    outs, lses = [], []
    for index, pad in zip(q_indices, pads):
        rows = len(index) + pad
        outs.append(torch.randn((batch, heads, rows, dim), generator=gen, dtype=dtype))
        lse = 3 * torch.randn((batch, heads, rows), generator=gen, dtype=dtype)
        lses.append(torch.where(torch.rand((batch, heads, rows), generator=gen) < dead, float("-inf"), lse))
    return outs, lses


def _merged_with_grads(merge, outs, lses, n, seed):
    """(out, lse, d outs, d lses) of one merge, under a loss that weighs out and the finite lses randomly."""
    leaves = [x.clone().requires_grad_() for x in (*outs, *lses)]
    out, lse = merge(leaves[: len(outs)], leaves[len(outs) :])
    gen = torch.Generator().manual_seed(seed + 1)
    g_out = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    g_lse = torch.randn(lse.shape, generator=gen, dtype=lse.dtype)
    loss = (out * g_out).sum() + torch.where(torch.isfinite(lse), lse * g_lse, 0).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out.detach(), lse.detach(), [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


def check_merge(
    q_indices: list[np.ndarray],
    pads: list[int],
    n: int,
    shape: tuple[int, int, int],
    dtype: torch.dtype,
    seed: int = 0,
    dead: float = 0.2,
) -> None:
    outs, lses = _inputs(q_indices, pads, shape, dtype, seed, dead)
    tables = MergeTables.build(q_indices, [len(i) + p for i, p in zip(q_indices, pads)], n, torch.device("cpu"))
    indices = [torch.as_tensor(i, dtype=torch.int64) for i in q_indices]

    def reference(o, s):
        return merge_passes(
            [x[:, :, : len(i)] for x, i in zip(o, indices)], [x[:, :, : len(i)] for x, i in zip(s, indices)], indices, n
        )

    want = _merged_with_grads(reference, outs, lses, n, seed)
    got = _merged_with_grads(lambda o, s: fused_merge(o, s, tables), outs, lses, n, seed)
    bound = TOLERANCE[dtype]
    assert got[0].dtype == dtype and got[1].dtype == dtype
    assert torch.equal(torch.isinf(got[1]), torch.isinf(want[1])), "rows no pass reaches must have lse = -inf"
    finite = torch.isfinite(want[1])
    torch.testing.assert_close(got[1][finite], want[1][finite], rtol=bound, atol=bound)
    torch.testing.assert_close(got[0], want[0], rtol=bound, atol=bound)
    assert not got[0][~finite].any(), "rows no pass reaches must be zeros"
    for k, (a, e) in enumerate(zip(got[2], want[2])):
        torch.testing.assert_close(a, e, rtol=bound, atol=bound, msg=lambda m, k=k: f"gradient of input {k}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_partial_repeated_and_unreached_rows(dtype: torch.dtype) -> None:
    """A full pass in token order, a residue-like permutation, a gathered subset with a row twice,
    rows 17 and 18 reached by no pass; padding after two of the passes; D = 24 (not a power of two)."""
    n = 20
    everyone = np.r_[0:17, 19]
    by_residue_reversed = everyone[np.argsort(everyone % 3, kind="stable")][::-1].copy()
    q_indices = [everyone, by_residue_reversed, np.array([5, 0, 5, 12, 19, 3])]
    check_merge(q_indices, [0, 3, 10], n, (2, 3, 24), dtype)


def test_rows_whose_passes_saw_no_key() -> None:
    """Every lse −inf in one pass, and every lse −inf for half the rows: lse −inf and zeros there."""
    n = 12
    q_indices = [np.arange(n), np.arange(0, n, 2)]
    outs, lses = _inputs(q_indices, [0, 0], (1, 2, 16), torch.float64, seed=3, dead=0.0)
    lses[1] = torch.full_like(lses[1], float("-inf"))
    lses[0][..., : n // 2] = float("-inf")
    tables = MergeTables.build(q_indices, [n, n // 2], n, torch.device("cpu"))
    out, lse = fused_merge(outs, lses, tables)
    assert torch.isinf(lse[..., : n // 2]).all() and not out[..., : n // 2, :].any()
    torch.testing.assert_close(lse[..., n // 2 :], lses[0][..., n // 2 :])
    torch.testing.assert_close(out[..., n // 2 :, :], outs[0][..., n // 2 :, :])


def test_tables_layers() -> None:
    """A pass holding a row twice gives two layers; padding rows are −1."""
    tables = MergeTables.build([np.array([2, 0, 2, 2]), np.array([1])], [6, 1], 4, torch.device("cpu"))
    assert tables.layer_pass == (0, 0, 0, 1)
    assert tables.inverse.tolist() == [[1, -1, 0, -1], [-1, -1, 2, -1], [-1, -1, 3, -1], [-1, 0, -1, -1]]
    assert tables.rows[0].tolist() == [2, 0, 2, 2, -1, -1]


@st.composite
def coverages(draw: st.DrawFn) -> tuple[list[np.ndarray], list[int], int]:
    """Random passes over n rows: each a list of rows (repeats allowed), padded by a few rows."""
    n = draw(st.integers(1, 40))
    count = draw(st.integers(1, 3))
    rows = st.lists(st.integers(0, n - 1), min_size=1, max_size=2 * n)
    q_indices = [np.asarray(draw(rows), dtype=np.int64) for _ in range(count)]
    pads = [draw(st.integers(0, 5)) for _ in range(count)]
    return q_indices, pads, n


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coverages(), st.sampled_from([torch.float64, torch.float32]), st.integers(1, 33), st.integers(0, 2**16))
def test_random_coverage(
    case: tuple[list[np.ndarray], list[int], int], dtype: torch.dtype, dim: int, seed: int
) -> None:
    q_indices, pads, n = case
    check_merge(q_indices, pads, n, (1, 2, dim), dtype, seed)
