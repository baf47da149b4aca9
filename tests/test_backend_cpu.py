"""The CPU backend equals dense masked softmax attention in float64: outputs, lse and all gradients."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, spec_dicts, tile_shapes

import maskc
from maskc.backends.cpu import CpuBackend
from maskc.backends.cpu.plan import build_plan
from maskc.clustering import cluster_labels
from maskc.errors import BackendError, MaskcWarning
from maskc.ir.build import build_layout
from maskc.registry import get_backend

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RELATIVE = 1e-12


# ----------------------------------------------------------------------------- reference


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked softmax attention on the full n × n matrix; rows with no key give zeros and lse = −inf.

    mask: (n, n) for every head, or (heads, n, n).
    """
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    mask = mask.expand(q.shape[0], q.shape[1], q.shape[2], q.shape[2])
    empty = ~mask.any(dim=-1)
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, -torch.inf).masked_fill(empty[..., None], 0.0)
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse[..., None]).masked_fill(~mask, 0.0)
    return probs @ v, lse.masked_fill(empty, -torch.inf)


def random_inputs(
    gen: torch.Generator, batch: int, heads: int, kv_heads: int, n: int, dim: int, value_dim: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    def draw(h: int, d: int) -> torch.Tensor:
        return torch.randn(batch, h, n, d, generator=gen, dtype=torch.float64).requires_grad_()

    return draw(heads, dim), draw(kv_heads, dim), draw(kv_heads, value_dim or dim)


def assert_relative(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """max |actual − expected| ≤ RELATIVE · max |expected|; infinities must match exactly."""
    actual, expected = actual.detach(), expected.detach()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    infinite = torch.isinf(expected)
    assert torch.equal(actual[infinite], expected[infinite]), f"{what}: infinities differ"
    a, e = actual[~infinite], expected[~infinite]
    assert torch.isfinite(a).all(), f"{what}: non-finite values"
    if e.numel():
        error = (a - e).abs().max().item()
        assert error <= RELATIVE * e.abs().max().item(), f"{what}: max error {error:.3g} against {e.abs().max():.3g}"


def check_against_dense(
    pattern: maskc.CompiledPattern,
    mask: np.ndarray,
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    gen: torch.Generator,
    scale: float | None = None,
    backend: str | CpuBackend = "cpu",
) -> None:
    """Forward (output and lse) and the gradients of q, k, v, through both outputs at once."""
    q, k, v = inputs
    if isinstance(backend, str):
        out, lse = maskc.attention(q, k, v, pattern, backend, scale=scale, return_lse=True)
    else:
        out, lse = backend.forward(q, k, v, pattern, scale=scale, return_lse=True)
    ref_out, ref_lse = dense_attention(q, k, v, torch.from_numpy(mask), q.shape[-1] ** -0.5 if scale is None else scale)
    assert out.dtype == q.dtype and lse.dtype == q.dtype
    assert_relative(out, ref_out, "output")
    assert_relative(lse, ref_lse, "lse")
    d_out = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    d_lse = torch.randn(lse.shape, generator=gen, dtype=lse.dtype)
    grads = torch.autograd.grad([out, lse.masked_fill(torch.isinf(lse), 0.0)], [q, k, v], [d_out, d_lse])
    ref_lse_finite = ref_lse.masked_fill(torch.isinf(ref_lse), 0.0)
    ref_grads = torch.autograd.grad([ref_out, ref_lse_finite], [q, k, v], [d_out, d_lse])
    for name, got, want in zip("qkv", grads, ref_grads):
        assert_relative(got, want, f"d{name}")


def compile_quietly(spec: maskc.Spec | dict, **kwargs: object) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(spec if isinstance(spec, maskc.Spec) else maskc.Spec.model_validate(spec), **kwargs)


# ----------------------------------------------------------------------------- properties


@st.composite
def head_counts(draw: st.DrawFn, spec_heads: int | None) -> tuple[int, int, int | None]:
    """(query heads, key/value heads, heads to compile for: None broadcasts a one-head pattern)."""
    kv_heads = draw(st.integers(1, 2))
    if spec_heads is not None:
        if spec_heads % kv_heads:
            kv_heads = 1
        return spec_heads, kv_heads, spec_heads
    heads = kv_heads * draw(st.integers(1, 3))
    return heads, kv_heads, draw(st.sampled_from([None, heads]))


@PROPERTY
@given(spec_dicts(max_n=80), tile_shapes(), st.data())
def test_matches_dense_attention(case: tuple[dict, int], tile: tuple[int, int], data: st.DataObject) -> None:
    spec_dict, n = case
    heads, kv_heads, compiled_heads = data.draw(head_counts(spec_dict.get("heads")))
    pattern = compile_quietly(spec_dict, block_size=tile, heads=compiled_heads)
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    batch, dim = data.draw(st.integers(1, 2)), data.draw(st.sampled_from([1, 4, 8]))
    scale = data.draw(st.sampled_from([None, 0.3]))
    inputs = random_inputs(gen, batch, heads, kv_heads, n, dim, value_dim=data.draw(st.sampled_from([dim, 3])))
    check_against_dense(pattern, brute_force_mask(spec_dict, n), inputs, gen, scale=scale)


@settings(max_examples=60, deadline=None)
@given(spec_dicts(max_n=300, per_head=False), tile_shapes())
def test_plan_places_every_element_in_its_tile(case: tuple[dict, int], tile: tuple[int, int]) -> None:
    """Each element's slot points at its own row and column inside the tile products."""
    layout = compile_quietly(case[0], block_size=tile).layouts[0]
    grid = layout.grid
    for lo, hi in layout.row_chunks(3):
        plan = build_plan(layout, lo, hi)
        coo = plan.matrix(np.ones(plan.nnz)).tocoo()
        tile_index, within = np.divmod(plan.slot.astype(np.int64), grid.block_m * grid.block_n)
        x, y = np.divmod(within, grid.block_n)
        assert np.array_equal(plan.tile_rows[tile_index] * grid.block_m + x, coo.row + plan.row_lo)
        assert np.array_equal(plan.tile_cols[tile_index] * grid.block_n + y, coo.col)


# ----------------------------------------------------------------------------- cases


def test_sparse_pattern_at_larger_n() -> None:
    """A pattern far sparser than its tile grid (searched rather than tabled tile lookup), GQA, several chunks."""
    spec = {"name": "sparse", "block_size": 16, "pattern": [{"sink": {"count": 1}}, {"stride": {"every": 700}}]}
    n = 1500
    pattern = compile_quietly(spec, seq_len=n, block_size=16)
    gen = torch.Generator().manual_seed(1)
    inputs = random_inputs(gen, 1, 2, 1, n, 4)
    check_against_dense(pattern, brute_force_mask(spec, n), inputs, gen, backend=CpuBackend(memory_budget=1 << 20))


def test_per_head_patterns_with_gqa() -> None:
    spec = {
        "name": "heads",
        "heads": 4,
        "causal": True,
        "block_size": 16,
        "pattern": {"window": {"before": 7}},
        "head_patterns": [{"heads": [1, 2], "pattern": [{"global": {"tokens": [5]}}, {"stride": {"every": 9}}]}],
    }
    n = 70
    pattern = compile_quietly(spec, seq_len=n)
    assert len(pattern.layouts) == 2
    gen = torch.Generator().manual_seed(2)
    check_against_dense(pattern, brute_force_mask(spec, n), random_inputs(gen, 2, 4, 2, n, 8), gen)


def test_rows_with_no_key_give_zeros_and_minus_infinity() -> None:
    spec = {"name": "rows", "pattern": {"global": {"tokens": [2, 40], "direction": "rows"}}}
    n = 50
    pattern = compile_quietly(spec, seq_len=n, block_size=16)
    gen = torch.Generator().manual_seed(3)
    q, k, v = random_inputs(gen, 1, 2, 2, n, 4)
    out, lse = maskc.attention(q, k, v, pattern, "cpu", return_lse=True)
    empty = np.setdiff1d(np.arange(n), [2, 40])
    assert torch.equal(out[:, :, empty], torch.zeros_like(out[:, :, empty]))
    assert torch.isneginf(lse[:, :, empty]).all() and torch.isfinite(lse[:, :, [2, 40]]).all()
    check_against_dense(pattern, brute_force_mask(spec, n), (q, k, v), gen)


def test_one_pattern_serves_every_head() -> None:
    pattern = compile_quietly({"name": "w", "pattern": {"window": {"size": 6}}}, seq_len=40, block_size=16)
    gen = torch.Generator().manual_seed(4)
    q, k, v = random_inputs(gen, 2, 3, 1, 40, 4)
    out = maskc.attention(q, k, v, pattern, "cpu")
    assert isinstance(out, torch.Tensor)
    check_against_dense(pattern, pattern.to_dense(), (q, k, v), gen)


def test_registered_as_cpu() -> None:
    backend = get_backend("cpu")
    assert isinstance(backend, CpuBackend) and "cpu" in maskc.available_backends()
    pattern = compile_quietly({"name": "w", "pattern": {"window": {"size": 6}}}, seq_len=40, block_size=16)
    assert backend.supports(*_tensors((1, 1, 40, 4), (1, 1, 40, 4)), pattern) is None


def test_dynamic_cluster_pattern_matches_its_labels() -> None:
    """Cluster membership from the run-time labels of q and k, then exact attention on that mask."""
    spec = maskc.parse_spec(
        "name: routed\nheads: 2\ncausal: true\nblock_size: 16\n"
        "pattern: [{cluster: {clusters: 4, method: lsh, seed: 3}}, {window: {before: 2}}]\n"
    )
    n = 48
    pattern = compile_quietly(spec, seq_len=n)
    gen = torch.Generator().manual_seed(5)
    q, k, v = random_inputs(gen, 2, 2, 1, n, 8)
    q_labels, k_labels = cluster_labels(spec.pattern.of[0], q.detach(), k.detach().expand(-1, 2, -1, -1))
    same = (q_labels[..., :, None] == k_labels[..., None, :]).numpy()
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    mask = (same | ((j <= i) & (j >= i - 2))) & (j <= i)
    check_against_dense(pattern, mask, (q, k, v), gen)


def test_gradcheck_small_float64() -> None:
    spec = {
        "name": "g",
        "heads": 2,
        "block_size": 16,
        "causal": True,
        "pattern": [{"window": {"before": 3, "after": 1}}, {"global": {"tokens": [0]}}],
        "head_patterns": [{"heads": [1], "pattern": {"stride": {"every": 5}}}],
    }
    pattern = compile_quietly(spec, seq_len=20)
    q, k, v = random_inputs(torch.Generator().manual_seed(6), 1, 2, 1, 20, 3)

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return maskc.attention(q, k, v, pattern, "cpu", return_lse=True)

    assert torch.autograd.gradcheck(run, (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_narrow_dtypes_compute_in_float32(dtype: torch.dtype) -> None:
    pattern = compile_quietly({"name": "w", "pattern": {"window": {"size": 10}}}, seq_len=64, block_size=16)
    gen = torch.Generator().manual_seed(7)
    q64, k64, v64 = random_inputs(gen, 1, 2, 2, 64, 8)
    q, k, v = (x.detach().to(dtype).requires_grad_() for x in (q64, k64, v64))
    out, lse = maskc.attention(q, k, v, pattern, "cpu", return_lse=True)
    assert out.dtype == dtype and lse.dtype == torch.float32
    out.float().sum().backward()
    assert q.grad.dtype == k.grad.dtype == v.grad.dtype == dtype
    ref_out, ref_lse = dense_attention(
        *(x.detach().double() for x in (q, k, v)), torch.from_numpy(pattern.to_dense()), 8**-0.5
    )
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    assert (out.double() - ref_out).abs().max() <= tolerance * ref_out.abs().max()
    assert (lse.double() - ref_lse).abs().max() <= 1e-5 * ref_lse.abs().max()


# ----------------------------------------------------------------------------- chunks and plan cache


def test_chunking_and_cache_do_not_change_results() -> None:
    spec = {"name": "mix", "block_size": 16, "pattern": [{"window": {"size": 20}}, {"random": {"per_row": 2}}]}
    n = 300
    pattern = compile_quietly(spec, seq_len=n)
    gen = torch.Generator().manual_seed(8)
    q, k, v = random_inputs(gen, 1, 2, 1, n, 8)
    whole = CpuBackend().forward(q, k, v, pattern, return_lse=True)
    tiny = CpuBackend(memory_budget=1, cache_budget=0)
    layout = pattern.layouts[0]
    assert len(list(layout.row_chunks(1))) == layout.grid.row_tiles > 1
    for got, want in zip(tiny.forward(q, k, v, pattern, return_lse=True), whole):
        assert torch.equal(got, want)
    assert tiny.plans.nbytes == 0
    check_against_dense(pattern, brute_force_mask(spec, n), (q, k, v), gen, backend=tiny)


def test_plan_cache_reuses_evicts_and_forgets() -> None:
    backend = CpuBackend(memory_budget=1)
    spec = {"name": "w", "pattern": {"window": {"size": 4}}}
    first, second = (compile_quietly(spec, seq_len=n, block_size=16) for n in (64, 80))
    q, k, v = random_inputs(torch.Generator().manual_seed(9), 1, 1, 1, 64, 4)
    backend.forward(q, k, v, first)
    held = backend.plans.nbytes
    assert held > 0
    plan = backend.plans.get(first.layouts[0], 0, 1)
    backend.forward(q, k, v, first)
    assert backend.plans.get(first.layouts[0], 0, 1) is plan and backend.plans.nbytes == held
    backend.plans.budget = held
    backend.forward(*(x[:, :, :1].expand(-1, -1, 80, -1) for x in (q, k, v)), second)
    assert backend.plans.nbytes <= held
    assert backend.plans.get(first.layouts[0], 0, 1) is not plan, "the least recently used plans go first"
    backend.plans.clear()
    transient = build_layout(first.layouts[0].rule, first.grid)
    backend.plans.get(transient, 0, 2)
    assert backend.plans.nbytes > 0
    del transient
    gc.collect()
    assert backend.plans.nbytes == 0, "plans go with their layout"


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def window() -> maskc.CompiledPattern:
    return compile_quietly({"name": "w", "heads": 2, "pattern": {"window": {"size": 4}}}, seq_len=32, block_size=16)


def _tensors(shape_q: tuple, shape_k: tuple, shape_v: tuple | None = None, **kw: object) -> tuple:
    return torch.randn(*shape_q, **kw), torch.randn(*shape_k, **kw), torch.randn(*(shape_v or shape_k), **kw)


@pytest.mark.parametrize(
    ("q", "k", "v", "message"),
    [
        ((1, 2, 32, 8), (2, 2, 32, 8), None, "batch sizes differ"),
        ((1, 2, 32, 8), (1, 2, 31, 8), None, "q has 32 rows but k only 31"),
        ((1, 2, 32, 8), (1, 2, 32, 8), (1, 2, 31, 8), "same number of rows"),
        ((1, 2, 32, 8), (1, 2, 32, 4), None, "share head_dim"),
        ((1, 2, 32, 8), (1, 2, 32, 8), (1, 1, 32, 8), "same number of heads"),
        ((1, 2, 32, 8), (1, 3, 32, 8), None, "not a multiple"),
        ((2, 32, 8), (2, 32, 8), None, "must be 4-D"),
        ((1, 2, 32, 0), (1, 2, 32, 0), None, "at least 1"),
        ((1, 2, 40, 8), (1, 2, 40, 8), None, r"k_offset \+ 40 <= 32 \(the pattern's seq_len\)"),
        ((1, 4, 32, 8), (1, 2, 32, 8), None, "compiled for 2 heads, but q has 4"),
    ],
)
def test_shape_errors(window: maskc.CompiledPattern, q: tuple, k: tuple, v: tuple | None, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        maskc.attention(*_tensors(q, k, v), window, "cpu")


def test_per_head_pattern_needs_its_head_count() -> None:
    spec = {
        "name": "h",
        "heads": 2,
        "pattern": {"window": {"size": 4}},
        "head_patterns": [{"heads": [1], "pattern": {"dense": {}}}],
    }
    pattern = compile_quietly(spec, seq_len=32, block_size=16)
    with pytest.raises(BackendError, match="compiled for 2 heads, but q has 1"):
        maskc.attention(*_tensors((1, 1, 32, 8), (1, 1, 32, 8)), pattern, "cpu")


def test_dynamic_pattern_is_not_shared_across_heads() -> None:
    pattern = compile_quietly({"name": "c", "pattern": {"cluster": {"clusters": 2}}}, seq_len=32, block_size=16)
    with pytest.raises(BackendError, match="compiled for 1 heads, but q has 2; compile it with heads=2"):
        maskc.attention(*_tensors((1, 2, 32, 8), (1, 2, 32, 8)), pattern, "cpu")


def test_dtype_device_and_type_errors(window: maskc.CompiledPattern) -> None:
    q, k, v = _tensors((1, 2, 32, 8), (1, 2, 32, 8))
    backend = CpuBackend()
    assert backend.supports(q, k, v, window) is None
    with pytest.raises(BackendError, match="dtype int64; the cpu backend takes float64, float32"):
        maskc.attention(q.long(), k.long(), v.long(), window, "cpu")
    with pytest.raises(BackendError, match="share one dtype"):
        maskc.attention(q.double(), k, v, window, "cpu")
    on_device = _tensors((1, 2, 32, 8), (1, 2, 32, 8), device="meta")
    assert "k is on meta" in backend.supports(q, on_device[1], v, window)
    with pytest.raises(BackendError, match="q is on meta; the cpu backend takes CPU tensors"):
        maskc.attention(*on_device, window, "cpu")
    with pytest.raises(BackendError, match="q is on meta"):
        backend.forward(*on_device, window)
    with pytest.raises(BackendError, match="v is a ndarray, not a torch tensor"):
        backend.forward(q, k, v.numpy(), window)
    with pytest.raises(BackendError, match="not a CompiledPattern"):
        backend.forward(q, k, v, window.spec)
    for scale, message in (("big", "real number"), (float("nan"), "finite")):
        with pytest.raises(BackendError, match=message):
            backend.forward(q, k, v, window, scale=scale)
