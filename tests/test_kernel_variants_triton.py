"""The kernels' GPU variants, through Triton's interpreter (TRITON_INTERPRET=1): tensor-descriptor
(TMA) loads and dQ by atomics inside the dK/dV kernel.

On Hopper the tuner also times configurations whose walked tiles (keys and values in the forward
and dQ kernels, queries and dO in dK/dV) come through tensor descriptors (`descriptors.py`), and
on every GPU dK/dV configurations that add each tile's dQ to a float32 accumulator with atomics
instead of launching the dQ kernel. The interpreter runs the same kernel code, so here every call
is forced onto such configurations and checked against float64 dense attention on the
brute-force mask (outputs, lse, gradients): full-length calls, shards that are views into a
longer sequence, GQA and per-head patterns. Spies check that the descriptor path really ran, and
that calls which cannot take it (not on tile borders, a layout whose rows are not `dim` apart)
fall back to pointer loads.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)
from slicedref import sliced_attention
from specgen import brute_force_mask

import maskc
from maskc.backends.triton import backward, descriptors, tables, tuning
from maskc.backends.triton.kernels import kernel_module
from maskc.errors import MaskcWarning

SPECS = [
    ({"name": "swa-sinks", "causal": True, "pattern": [{"window": {"before": 11}}, {"sink": {"count": 3}}]}, 1),
    (
        {
            "name": "per-head",
            "heads": 2,
            "pattern": [{"window": {"size": 20}}, {"global": {"tokens": [5]}}],
            "head_patterns": [{"heads": [1], "pattern": {"stride": {"every": 7}}}],
        },
        2,
    ),
]
N = 64


def _forced(monkeypatch: pytest.MonkeyPatch, **variant: bool) -> list[bool]:
    """Every kernel on the pattern's tile shape with `variant` (tma, atomic_dq for dK/dV); returns, per
    launch that asked for descriptors, whether they were built (the TMA path) or not (pointers)."""
    used: list[bool] = []
    original_candidates, original_descriptors = tuning.candidates, descriptors.row_descriptors

    def candidates(kernel, head_dim, dtype, native, tma=False, ws=False, halves=False):
        found = original_candidates(kernel, head_dim, dtype, native, tma)
        return tuning.as_variant(found, kernel, **variant)

    def row_descriptors(tensors, block_rows):
        found = original_descriptors(tensors, block_rows)
        used.append(found is not None)
        return found

    monkeypatch.setattr(tuning, "candidates", candidates)
    monkeypatch.setattr(descriptors, "row_descriptors", row_descriptors)
    monkeypatch.setattr(tuning, "_CHOSEN", {})
    return used


@pytest.fixture
def tma_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    return _forced(monkeypatch, tma=True)


def _pattern(spec: dict) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(
            maskc.Spec.model_validate(spec), seq_len=N, block_size=(16, 16), heads=spec.get("heads", 2)
        )


def _check(spec: dict, q, k, v, q_start: int, k_start: int) -> None:
    """Output, lse and gradients of one call against float64 dense attention on the mask's slice."""
    pattern = _pattern(spec)
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    out, lse = maskc.attention(*leaves, pattern, "triton", return_lse=True, q_offset=q_start, k_offset=k_start)
    refs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    mask = brute_force_mask(spec, N)
    ref_out, ref_lse = sliced_attention(*refs, mask, [q_start] * q.shape[0], k_start, q.shape[-1] ** -0.5)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = torch.isfinite(ref_lse)
    assert (out.double() - ref_out).norm() / ref_out.norm() < 1e-4
    assert (lse[finite].double() - ref_lse[finite]).abs().max() < 1e-4
    d_out = torch.randn_like(out)
    got = torch.autograd.grad(out, leaves, d_out)
    want = torch.autograd.grad(ref_out, refs, d_out.double())
    for g, w in zip(got, want):
        assert (g.double() - w).norm() / w.norm().clamp_min(1e-30) < 1e-4


@pytest.mark.parametrize("which", range(len(SPECS)))
def test_full_length_calls_load_through_descriptors(tma_calls, which):
    spec, kv_heads = SPECS[which]
    gen = torch.Generator().manual_seed(which)
    q = torch.randn(2, 2, N, 16, generator=gen)
    k, v = (torch.randn(2, kv_heads, N, 16, generator=gen) for _ in range(2))
    _check(spec, q, k, v, 0, 0)
    assert tma_calls == [True] * 3  # forward, dK/dV, dQ


@pytest.mark.parametrize("which", range(len(SPECS)))
def test_shards_of_a_longer_sequence_load_through_descriptors(tma_calls, which):
    """A context-parallel shard: rows and keys 32 … 63 as views into the whole sequence's tensors
    (head strides of 64 rows, not 32), on tile borders."""
    spec, kv_heads = SPECS[which]
    gen = torch.Generator().manual_seed(10 + which)
    q = torch.randn(1, 2, N, 16, generator=gen)[:, :, 32:]
    k, v = (torch.randn(1, kv_heads, N, 16, generator=gen)[:, :, 16:] for _ in range(2))
    _check(spec, q, k, v, 32, 16)
    assert tma_calls == [True] * 3


def test_calls_off_tile_borders_fall_back_to_pointer_loads(tma_calls):
    spec, kv_heads = SPECS[0]
    gen = torch.Generator().manual_seed(20)
    q = torch.randn(1, 2, 21, 16, generator=gen)
    k, v = (torch.randn(1, kv_heads, 40, 16, generator=gen) for _ in range(2))
    _check(spec, q, k, v, 30, 3)
    assert tma_calls == []  # not on tile borders: no descriptors asked for


def test_descriptors_need_rows_one_head_dim_apart():
    k = torch.randn(1, 4, 32, 16)
    assert descriptors.row_descriptors((k, k), 16) is not None
    heads_last = torch.randn(1, 32, 4, 16).transpose(1, 2)  # (B, N, H, D) storage: rows 4 · 16 apart
    assert descriptors.row_descriptors((heads_last,), 16) is None
    assert descriptors.row_descriptors((k, heads_last), 16) is None


@pytest.fixture
def dq_launches(monkeypatch: pytest.MonkeyPatch) -> list:
    """The grids of the dQ kernel's launches in this test."""
    module = kernel_module("backward", interpret=True)
    original, launches = module.maskc_backward_dq, []

    class Spy:
        def __getitem__(self, grid):
            launches.append(grid)
            return original[grid]

    monkeypatch.setattr(module, "maskc_backward_dq", Spy())
    return launches


@pytest.mark.parametrize("tma", [False, True])
@pytest.mark.parametrize("which", range(len(SPECS)))
def test_dq_by_atomics_in_the_dkdv_kernel(monkeypatch, dq_launches, which, tma):
    """dK/dV configurations with atomic_dq: the same gradients, with the dQ kernel never launched."""
    used = _forced(monkeypatch, tma=tma, atomic_dq=True)
    spec, kv_heads = SPECS[which]
    gen = torch.Generator().manual_seed(30 + which)
    q = torch.randn(2, 2, N, 16, generator=gen)
    k, v = (torch.randn(2, kv_heads, N, 16, generator=gen) for _ in range(2))
    _check(spec, q, k, v, 0, 0)
    assert dq_launches == []
    assert used == ([True] * 2 if tma else [])  # forward and dK/dV


def test_the_dq_kernel_runs_without_atomics(monkeypatch, dq_launches):
    """The spy above sees launches: without atomic_dq the dQ kernel runs once per backward."""
    _forced(monkeypatch, atomic_dq=False)
    spec, kv_heads = SPECS[0]
    gen = torch.Generator().manual_seed(35)
    q = torch.randn(1, 2, N, 16, generator=gen)
    k, v = (torch.randn(1, kv_heads, N, 16, generator=gen) for _ in range(2))
    _check(spec, q, k, v, 0, 0)
    assert len(dq_launches) == 1


@pytest.mark.parametrize("tma", [False, True])
def test_dq_by_atomics_in_chunks_of_long_columns(monkeypatch, dq_launches, tma):
    """Long lines run as chunks (the per-head spec's global token): the chunks' atomics add up too."""
    used = _forced(monkeypatch, tma=tma, atomic_dq=True)
    monkeypatch.setattr(tables, "CHUNK_TILES", 1)
    monkeypatch.setattr(tables, "LONG_FACTOR", 1.0)
    sums, original_sums = [], backward._sum_chunks
    monkeypatch.setattr(backward, "_sum_chunks", lambda *args: sums.append(1) or original_sums(*args))
    spec, kv_heads = SPECS[1]
    gen = torch.Generator().manual_seed(45)
    q = torch.randn(1, 2, N, 16, generator=gen)
    k, v = (torch.randn(1, kv_heads, N, 16, generator=gen) for _ in range(2))
    _check(spec, q, k, v, 0, 0)
    assert sums, "the dK/dV columns ran as chunks"
    assert dq_launches == [] and used == ([True] * 2 if tma else [])


def test_dq_by_atomics_off_tile_borders(monkeypatch):
    """A rectangle not on tile borders: the atomics skip the rows outside the call."""
    _forced(monkeypatch, atomic_dq=True)
    spec, kv_heads = SPECS[0]
    gen = torch.Generator().manual_seed(40)
    q = torch.randn(1, 2, 21, 16, generator=gen)
    k, v = (torch.randn(1, kv_heads, 40, 16, generator=gen) for _ in range(2))
    _check(spec, q, k, v, 30, 3)


def test_atomic_dq_only_when_asked_and_never_under_deterministic_algorithms(monkeypatch):
    monkeypatch.setattr(tuning, "interpreting", lambda: False)
    monkeypatch.delenv("MASKC_TRITON_ATOMIC_DQ", raising=False)
    assert not any(c.atomic_dq for c in tuning.candidates("dkdv", 128, torch.bfloat16, (64, 64)))
    monkeypatch.setenv("MASKC_TRITON_ATOMIC_DQ", "1")
    assert any(c.atomic_dq for c in tuning.candidates("dkdv", 128, torch.bfloat16, (64, 64)))
    torch.use_deterministic_algorithms(True)
    try:
        assert not any(c.atomic_dq for c in tuning.candidates("dkdv", 128, torch.bfloat16, (64, 64)))
    finally:
        torch.use_deterministic_algorithms(False)
