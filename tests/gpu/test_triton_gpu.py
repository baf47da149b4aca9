"""The Triton backend on a CUDA GPU against a float32 reference, for every spec in specs/.

The reference is dense masked attention on upcast inputs, computed in chunks of query rows so
that n = 32768 fits: each chunk's mask comes from evaluating the spec's element rule (numpy) on
the stored tiles of those rows, and its gradients from torch autograd. Inputs are fresh random
numbers on every run (the seed is printed on failure); the memory that outputs are allocated from
is filled with NaN first, so a tile the kernels never write fails the comparison.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import maskc
from maskc.backends.triton import tuning
from maskc.clustering import resolve_dynamic
from maskc.errors import MaskcWarning
from maskc.rules import evaluate_tiles

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))
#: Relative error bounds against the float32 reference.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 1e-2}
#: Query rows per reference chunk.
CHUNK_ROWS = 2048


@pytest.fixture(autouse=True)
def fixed_first_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kernel's first configuration, untimed (test_every_configuration tries them all)."""
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _layer_patterns(path: Path, n: int | None) -> list[maskc.CompiledPattern]:
    """The distinct patterns of a spec's layer schedule, for one head each unless per-head."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        layers = [pattern for _, pattern in maskc.compile_layers(path, seq_len=n)]
        seen, out = set(), []
        for pattern in layers:
            if pattern.spec_hash not in seen:
                seen.add(pattern.spec_hash)
                out.append(pattern if pattern.per_head else maskc.compile(pattern.spec, seq_len=n, heads=1))
        return out


def _chunk_mask(layout: maskc.BlockLayout, lo: int, hi: int) -> torch.Tensor:
    """Element mask of query rows [lo, hi) (whole tiles), from the rule evaluated on the stored tiles."""
    grid = layout.grid
    tiles_lo, tiles_hi = lo // grid.block_m, -(-hi // grid.block_m)
    a, b = layout.row_ptr[tiles_lo], layout.row_ptr[tiles_hi]
    r, c = layout.tile_rows()[a:b], layout.col_idx[a:b].astype(np.int64)
    mask = torch.zeros(
        (tiles_hi - tiles_lo) * grid.block_m, grid.col_tiles * grid.block_n, dtype=torch.bool, device="cuda"
    )
    if len(r):
        tiles = torch.as_tensor(evaluate_tiles(layout.rule, grid, r, c), device="cuda")
        rows = torch.as_tensor((r - tiles_lo) * grid.block_m, device="cuda")[:, None, None]
        cols = torch.as_tensor(c * grid.block_n, device="cuda")[:, None, None]
        local_r = torch.arange(grid.block_m, device="cuda")[None, :, None]
        local_c = torch.arange(grid.block_n, device="cuda")[None, None, :]
        mask[(rows + local_r).expand_as(tiles), (cols + local_c).expand_as(tiles)] = tiles
    return mask[: hi - lo, : grid.n]


def _reference(patterns, q, k, v, g, scale):
    """(out, lse, dq, dk, dv) in float32: chunked dense masked attention, gradients by autograd."""
    q, k, v, g = (x.float() for x in (q, k, v, g))
    _, heads, n, _ = q.shape
    group = heads // k.shape[1]
    out = torch.zeros(*q.shape[:3], v.shape[-1], device="cuda")
    lse = torch.empty(q.shape[:3], device="cuda")
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for b, pattern in enumerate(patterns):
        for h in range(heads):
            layout = pattern.layout_of_head(h if pattern.heads == heads else 0)
            key = k[b, h // group].requires_grad_()
            value = v[b, h // group].requires_grad_()
            for lo in range(0, n, CHUNK_ROWS):
                hi = min(lo + CHUNK_ROWS, n)
                query = q[b, h, lo:hi].requires_grad_()
                scores = (query @ key.T * scale).masked_fill(~_chunk_mask(layout, lo, hi), float("-inf"))
                row_lse = torch.logsumexp(scores, dim=-1)
                chunk = torch.exp(scores - row_lse[:, None]).nan_to_num(0.0) @ value
                grads = torch.autograd.grad(chunk, (query, key, value), g[b, h, lo:hi])
                out[b, h, lo:hi], lse[b, h, lo:hi] = chunk.detach(), row_lse.detach()
                dq[b, h, lo:hi] = grads[0]
                dk[b, h // group] += grads[1]
                dv[b, h // group] += grads[2]
    return out, lse, dq, dk, dv


def _poison_allocator(nbytes: int) -> None:
    """Fill `nbytes` of cached memory with NaN, so that outputs allocated from it start as NaN."""
    block = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")
    block.fill_(float("nan"))
    del block


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    """‖got − want‖ / ‖want‖, with ‖want‖ taken as at least 1e-3 per element: where the exact
    value is zero (the gradients of a query that attends only itself) rounding is compared with
    that absolute scale instead of with nothing. The lse of a row with no key is −inf: such
    positions must be −inf on both sides, and every other value finite in both."""
    got, want = got.float(), want.float()
    empty = want == float("-inf")
    assert torch.equal(got == float("-inf"), empty), "−inf at other positions than the reference's"
    assert torch.isfinite(got[~empty]).all(), "non-finite values (an unwritten tile?)"
    assert torch.isfinite(want[~empty]).all(), "non-finite reference values"
    got, want = got[~empty], want[~empty]
    floor = 1e-3 * max(want.numel(), 1) ** 0.5
    return ((got - want).norm() / want.norm().clamp_min(floor)).item()


def _check(pattern, batch, kv_heads, head_dim, dtype, scale=None, seed=None):
    seed = torch.seed() if seed is None else seed
    torch.manual_seed(seed)
    heads = pattern.heads
    n = pattern.n
    q = torch.randn(batch, heads, n, head_dim, device="cuda", dtype=dtype)
    k = torch.randn(batch, kv_heads, n, head_dim, device="cuda", dtype=dtype)
    v = torch.randn(batch, kv_heads, n, head_dim, device="cuda", dtype=dtype)
    g = torch.randn(batch, heads, n, head_dim, device="cuda", dtype=dtype)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    _poison_allocator(8 * (q.numel() + k.numel() + v.numel()) * q.element_size())
    out, lse = maskc.attention(*leaves, pattern, backend="triton", scale=scale, return_lse=True)
    out.backward(g)
    torch.cuda.synchronize()
    patterns = resolve_dynamic(pattern, q, k) if pattern.dynamic else [pattern] * batch
    scale = 1 / math.sqrt(head_dim) if scale is None else scale
    ref_out, ref_lse, *ref_grads = _reference(patterns, q, k, v, g, scale)
    bound = TOLERANCE[dtype]
    where = f"{pattern.spec.name} n={n} seed={seed}"
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)), f"{where}: rows without keys differ"
    finite = torch.isfinite(ref_lse)
    assert _relative(out, ref_out) < bound, where
    assert _relative(lse[finite], ref_lse[finite]) < 1e-4, f"{where}: lse"
    for name, leaf, want in zip("qkv", leaves, ref_grads):
        assert _relative(leaf.grad, want) < bound, f"{where}: d{name}"


@pytest.mark.parametrize("n", [4096, 32768])
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec(path: Path, n: int | None) -> None:
    """Every distinct layer pattern of every catalogue spec, bf16, D = 64, GQA where heads allow.

    A grid spec's n is its grid's: it runs once, at that n."""
    if maskc.load(path).grid is not None:
        if n != 4096:
            pytest.skip("a grid spec runs once, at its grid's n (the n = 4096 case)")
        n = None
    for pattern in _layer_patterns(path, n):
        _check(pattern, batch=1, kv_heads=max(1, pattern.heads // 2), head_dim=64, dtype=torch.bfloat16)


@pytest.mark.parametrize(
    "dtype, head_dim, n", [(torch.float16, 128, 5000), (torch.float32, 64, 4096), (torch.bfloat16, 96, 4224)]
)
def test_dtypes_head_dims_and_ragged_n(dtype: torch.dtype, head_dim: int, n: int) -> None:
    """fp16 with D = 128 and n not a multiple of any tile, fp32, and D = 96 (padded to 128)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(SPECS[0].parent / "longformer.yaml", seq_len=n, heads=4)
    _check(pattern, batch=2, kv_heads=1, head_dim=head_dim, dtype=dtype, scale=0.1)


@pytest.mark.parametrize("kernel", ["forward", "dkdv", "dq"])
def test_every_configuration(monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    """Every candidate the tuner may pick computes the same thing, on a block-64 pattern: on Hopper
    the tensor-descriptor variants of every kernel too, and dK/dV's candidates computing dQ by atomics
    (which the tuner times only with MASKC_TRITON_ATOMIC_DQ=1)."""
    monkeypatch.setenv("MASKC_TRITON_ATOMIC_DQ", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(SPECS[0].parent / "bigbird.yaml", seq_len=8192, heads=2)
    options = tuning.candidates(kernel, 128, torch.bfloat16, (64, 64), tuning.has_tma(torch.device("cuda")))
    original = tuning.candidates
    for config in options:
        monkeypatch.setattr(
            tuning,
            "candidates",
            lambda kind, *args, config=config: [config] if kind == kernel else original(kind, *args)[:1],
        )
        tuning._CHOSEN.clear()
        _check(pattern, batch=1, kv_heads=2, head_dim=128, dtype=torch.bfloat16)
    tuning._CHOSEN.clear()


def test_torch_compile_one_graph() -> None:
    """Inductor compiles a model step around the operator without a graph break.

    The step is compiled before it ever runs eagerly, so the plan is created when the graph runs.
    (The registry imports the built-in backends on first use, which torch.compile cannot trace:
    that discovery happens here first.)
    """
    maskc.available_backends()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(SPECS[0].parent / "mistral_swa.yaml", seq_len=8192, heads=4)
    q, k, v = (torch.randn(1, 4, 8192, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))

    def step(q, k, v):
        return maskc.attention(q * 2, k, v, pattern).float().square().mean()

    loss = torch.compile(step, fullgraph=True)(q, k, v)
    loss.backward()
    eager = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    want = step(q, k, v)
    want.backward()
    assert torch.allclose(loss, want, rtol=1e-3)
    assert all(_relative(a, x.grad.float()) < 1e-2 for a, x in zip(eager, (q, k, v)))


@pytest.mark.parametrize(
    "grid, pattern",
    [
        ({"shape": [64, 64], "order": {"tiles": [8, 8]}}, {"neighborhood": {"kernel": [13, 13]}}),
        ({"shape": [40, 56], "text": 77}, {"neighborhood": {"kernel": [7, 9], "dilation": [2, 3]}}),
        (
            {"shape": [8, 16, 24], "order": {"tiles": [2, 4, 8]}},
            {"neighborhood": {"kernel": [3, 5, 5], "causal": [True, False, False]}},
        ),
        (
            {"shape": [8, 16, 16], "order": {"tiles": [4, 8, 8]}, "text": 100},
            {"tiles": {"tile": [4, 8, 8], "kernel": [4, 16, 8]}},
        ),
        ({"shape": [8, 24, 24]}, {"tiles": {"tile": [2, 8, 8], "kernel": [6, 16, 8]}}),
    ],
)
def test_grid_patterns(grid: dict, pattern: dict) -> None:
    """NATTEN (tiled storage, dilation and text, causal time) and STA (text, row-major storage), bf16."""
    spec = maskc.Spec(name="grid", grid=grid, pattern=pattern)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        compiled = maskc.compile(spec, heads=4)
    _check(compiled, batch=1, kv_heads=2, head_dim=64, dtype=torch.bfloat16)


def test_token_lists_read_through_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past n = 2**24 a generated kernel reads a token list's pages instead of an n-long table; forced
    here at n = 4096 (pages of 64 positions, some empty), forward and gradients against float64."""
    import maskc.rules.tokens as tokens

    monkeypatch.setattr(tokens, "_MEMBER_TABLE_LIMIT", 0)
    monkeypatch.setattr(tokens, "PAGE_BITS", 6)
    spec = maskc.Spec(
        name="pages",
        heads=4,
        pattern=[
            {"window": {"size": 64}},
            {"global": {"tokens": [0, 33, 777, 2049, 4095], "direction": "rows"}},
            {"global": {"tokens": [1, 64, 65, 1999, 3000, 4000], "direction": "columns"}},
        ],
    )  # five runs each: more than a predicate compares (emit.RUNS_AS_COMPARISONS)
    pattern = maskc.compile(spec, seq_len=4096)
    _check(pattern, batch=1, kv_heads=2, head_dim=64, dtype=torch.bfloat16, seed=11)
