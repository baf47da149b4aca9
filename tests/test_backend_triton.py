"""The Triton backend's kernels on the CPU, through Triton's interpreter (TRITON_INTERPRET=1).

Every check compares with an independent reference on fresh random inputs: the CPU backend in
float64 (forward, lse and gradients), or, for random specs, float64 dense attention under the
brute-force mask of the spec language. Shapes are small because the interpreter is slow; n is
often not a multiple of the tile, and tiles are rectangular, so the bounds paths run too.
"""

from __future__ import annotations

import itertools
import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, spec_dicts

import maskc
from maskc.backends.triton.emit import RUNS_AS_COMPARISONS, token_runs
from maskc.backends.triton.plans import plan_for
from maskc.errors import BackendError, MaskcWarning
from maskc.registry import choose_backend, get_backend

#: Relative error bounds against float64 (the issue's: 1e-4 for float32, 2e-2 for bfloat16).
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 2e-2}


@pytest.fixture(autouse=True, scope="module")
def interpreter(tmp_path_factory: pytest.TempPathFactory):
    """TRITON_INTERPRET=1 and a fresh kernel cache for this module only; restored afterwards.

    The generated kernel modules read the variable when they load, so it must be set before the
    first call; other test modules see it unset again (backend="auto" then skips Triton on CPU).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        patch.setenv("MASKC_CACHE_DIR", str(tmp_path_factory.mktemp("maskc-cache")))
        yield


def _inputs(batch, heads, kv_heads, n, head_dim, value_dim, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(batch, heads, n, head_dim), (batch, kv_heads, n, head_dim), (batch, kv_heads, n, value_dim)]
    return [torch.randn(s, generator=gen).to(dtype) for s in shapes]


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    assert torch.isfinite(got).all(), "non-finite values"
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


def _run(pattern, q, k, v, backend, scale, lse_weight):
    """Forward and backward of sum(out · g) + lse_weight · sum(finite lse · h); returns out, lse, grads."""
    leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    out, lse = maskc.attention(*leaves, pattern, backend=backend, scale=scale, return_lse=True)
    gen = torch.Generator().manual_seed(7)
    g = torch.randn(out.shape, generator=gen).to(out.dtype)
    h = torch.randn(lse.shape, generator=gen).to(lse.dtype)
    loss = (out * g).sum() + lse_weight * torch.where(torch.isfinite(lse), lse * h, 0).sum()
    loss.backward()
    return out.detach(), lse.detach(), [x.grad for x in leaves]


#: Small versions of the catalogue's patterns (the interpreter is slow): name → (spec, n, tile, heads).
SPECS = {
    "longformer": ({"pattern": [{"window": {"size": 40}}, {"global": {"tokens": [0, 77]}}]}, 150, (32, 32), 4),
    "bigbird": (
        {
            "block_size": 16,
            "pattern": [
                {"window": {"before": 1, "after": 1, "granularity": "block"}},
                {"global": {"first": 16}},
                {"random": {"per_row": 2}},
            ],
        },
        128,
        (32, 16),
        2,
    ),
    "fixed-heads": (
        {
            "causal": True,
            "heads": 2,
            "pattern": {"block_local": {"size": 32}},
            "head_patterns": [
                {
                    "heads": [1],
                    "pattern": [{"global": {"every": 32, "offset": o, "direction": "columns"}} for o in (28, 31)],
                }
            ],
        },
        96,
        (16, 32),
        2,
    ),
    "sliding-window": ({"causal": True, "pattern": {"window": {"before": 39, "after": 0}}}, 112, (32, 16), 2),
    "strided-heads": (
        {
            "causal": True,
            "heads": 2,
            "pattern": {"window": {"before": 16, "after": 0}},
            "head_patterns": [{"heads": [1], "pattern": {"stride": {"every": 16}}}],
        },
        96,
        (32, 32),
        2,
    ),
}

CASES = [
    # spec, kv_heads, head_dim, value_dim, dtype, scale, lse weight
    ("longformer", 2, 24, 16, torch.float32, None, 0.0),
    ("bigbird", 1, 32, 32, torch.bfloat16, None, 0.0),
    ("fixed-heads", 2, 16, 16, torch.float32, -0.4, 0.5),
    ("sliding-window", 2, 32, 32, torch.bfloat16, 0.3, 0.5),
    ("strided-heads", 1, 16, 16, torch.float32, None, 0.0),
]


def _compiled(name: str) -> maskc.CompiledPattern:
    data, n, tile, heads = SPECS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(maskc.Spec(name=name, **data), seq_len=n, block_size=tile, heads=heads)


@pytest.mark.parametrize("name, kv_heads, head_dim, value_dim, dtype, scale, lse_weight", CASES)
def test_matches_cpu_reference(name, kv_heads, head_dim, value_dim, dtype, scale, lse_weight):
    """Output, lse and all three gradients against the CPU backend in float64."""
    pattern = _compiled(name)
    q, k, v = _inputs(1, pattern.heads, kv_heads, pattern.n, head_dim, value_dim, dtype, seed=pattern.n)
    out, lse, grads = _run(pattern, q, k, v, "triton", scale, lse_weight)
    ref_out, ref_lse, ref_grads = _run(pattern, q.double(), k.double(), v.double(), "cpu", scale, lse_weight)
    assert out.dtype == dtype and lse.dtype == torch.float32
    bound = TOLERANCE[dtype]
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse)), "rows without keys differ"
    finite = torch.isfinite(ref_lse)
    assert _relative(out, ref_out) < bound
    assert _relative(lse[finite], ref_lse[finite]) < bound
    for name, got, want in zip("qkv", grads, ref_grads):
        assert _relative(got, want) < bound, f"d{name}"


def test_rows_without_keys_give_zeros_and_no_nan():
    """A pattern where most rows attend nothing: zeros, lse = −inf, finite gradients."""
    spec = maskc.Spec(name="few-rows", pattern={"global": {"tokens": [5, 70], "direction": "rows"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(spec, seq_len=96, block_size=32)
    q, k, v = _inputs(1, 1, 1, 96, 16, 16, torch.float32, seed=3)
    out, lse, grads = _run(pattern, q, k, v, "triton", None, 0.0)
    empty = torch.ones(96, dtype=torch.bool)
    empty[[5, 70]] = False
    assert torch.all(out[0, 0, empty] == 0) and torch.all(lse[0, 0, empty] == float("-inf"))
    assert torch.all(out[0, 0, ~empty].abs().sum(-1) > 0)
    assert all(torch.isfinite(g).all() for g in grads)


def test_dynamic_pattern_matches_cpu_reference():
    """A cluster spec resolves from q and k per batch element, as the CPU backend resolves it."""
    pattern = maskc.compile("specs/reformer.yaml", seq_len=128, block_size=32)
    q, k, v = _inputs(2, 1, 1, 128, 16, 16, torch.float32, seed=11)
    out, lse, grads = _run(pattern, q, k, v, "triton", None, 0.0)
    ref_out, ref_lse, ref_grads = _run(pattern, q.double(), k.double(), v.double(), "cpu", None, 0.0)
    assert _relative(out, ref_out) < 1e-4
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    for got, want in zip(grads, ref_grads):
        assert _relative(got, want) < 1e-4


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=spec_dicts(max_n=80), tile=st.sampled_from([(16, 16), (16, 32), (32, 16)]), seed=st.integers(0, 99))
def test_random_specs_forward_match_brute_force(case, tile, seed):
    """Any static spec: the forward pass equals float64 dense attention under the brute-force mask."""
    data, n = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec.model_validate(data), seq_len=n, block_size=tile)
    heads = pattern.heads
    q, k, v = _inputs(1, heads, heads, n, 16, 16, torch.float32, seed)
    out = maskc.attention(q, k, v, pattern, backend="triton")
    mask = torch.as_tensor(np.broadcast_to(brute_force_mask(data, n), (heads, n, n)).copy())
    scores = (q.double() @ k.double().transpose(-1, -2) / 4.0).masked_fill(~mask, float("-inf"))
    want = torch.softmax(scores, dim=-1).nan_to_num(0.0) @ v.double()
    assert _relative(out, want) < 1e-4


def test_compiles_into_one_graph():
    """torch.compile traces the operator through its fake implementation: no graph break."""
    pattern = maskc.compile("specs/longformer.yaml", seq_len=64, block_size=32, heads=1)
    q, k, v = (x.requires_grad_() for x in _inputs(1, 1, 1, 64, 16, 16, torch.float32, seed=5))

    def step(q, k, v):
        return maskc.attention(q, k, v, pattern, backend="triton").square().sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(q, k, v)
    loss.backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    step(q, k, v).backward()
    assert torch.allclose(loss, step(q, k, v))
    assert all(torch.allclose(a, x.grad) for a, x in zip(grads, (q, k, v)))


def test_second_derivatives_are_refused():
    """Differentiable once: a gradient penalty must fail loudly, not drop the attention's terms."""
    pattern = maskc.compile("specs/longformer.yaml", seq_len=64, block_size=32, heads=1)
    q, k, v = (x.requires_grad_() for x in _inputs(1, 1, 1, 64, 16, 16, torch.float32, seed=6))
    loss = maskc.attention(q, k, v, pattern, backend="triton").square().sum()
    (grad_q,) = torch.autograd.grad(loss, q, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        (loss + grad_q.square().sum()).backward()


def test_fake_tensor_tracing_takes_the_custom_op():
    """make_fx with fake tensors (as aot_function does) traces the op instead of launching kernels."""
    from torch.fx.experimental.proxy_tensor import make_fx

    pattern = maskc.compile("specs/longformer.yaml", seq_len=64, block_size=32, heads=1)
    q, k, v = _inputs(1, 1, 1, 64, 16, 16, torch.float32, seed=7)
    graph = make_fx(lambda a, b, c: maskc.attention(a, b, c, pattern, backend="triton"), tracing_mode="fake")(q, k, v)
    assert any("triton_attention" in str(node.target) for node in graph.graph.nodes)


def test_source_is_keyed_by_structure_not_n_or_values(tmp_path):
    """One module for a window at any n and width; a different rule structure gets another."""
    backend = get_backend("triton")
    small = maskc.Spec(name="w", pattern={"window": {"before": 8, "after": 0}})
    wide = maskc.Spec(name="w", pattern={"window": {"before": 300, "after": 0}})
    other = maskc.Spec(name="w", pattern=[{"window": {"before": 8}}, {"sink": {"count": 4}}])
    sources = [backend.source(maskc.compile(s, seq_len=n)) for s, n in ((small, 128), (wide, 4096), (other, 128))]
    assert sources[0] == sources[1] != sources[2]
    assert "def tile_mask(q_idx, k_idx, code, n_ctx, mask_args, q_first, k_first, ALIGNED: tl.constexpr):" in sources[0]
    assert "def maskc_forward(" not in sources[0]  # the kernels are code in kernels/, not generated


def test_constants_stay_compile_time_constants_in_the_predicate():
    """Triton makes a constant bound to a plain name a scalar of the language, on which no condition
    is decided at compile time; bound through a tl.constexpr annotation it stays a constant, so that
    top-k's block size and a tile's extents choose one flag per tile (bench/NOTES.md). The source is
    checked here (the interpreter runs either form alike); the compiled form, by the offline compile
    (`bench/compile_offline.py`, its top-k case) and the GPU suite."""
    pattern = [{"window": {"before": 8}}, {"topk": {"blocks": 2}}]
    spec = maskc.Spec(name="t", causal=True, block_size=16, pattern=pattern)
    plan = plan_for(maskc.compile(spec, seq_len=128))
    constants = [arg.name for arg in plan.masks.args if arg.kind == "constexpr"]
    others = [arg.name for arg in plan.masks.args if arg.kind != "constexpr"]
    assert constants and others
    lines = plan.source().splitlines()
    for index, arg in enumerate(plan.masks.args):
        annotation = ": tl.constexpr" if arg.name in constants else ""
        assert f"    {arg.name}{annotation} = mask_args[{index}]" in lines


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    """Without TRITON_INTERPRET=1 a CPU call names the reason, and "auto" picks another backend."""
    pattern = maskc.compile("specs/longformer.yaml", seq_len=64, block_size=32, heads=1)
    q, k, v = _inputs(1, 1, 1, 64, 16, 16, torch.float32, seed=1)
    monkeypatch.delenv("TRITON_INTERPRET")
    reason = get_backend("triton").supports(q, k, v, pattern)
    assert reason is not None and "CUDA" in reason
    assert choose_backend(q, k, v, pattern).name != "triton"
    with pytest.raises(BackendError, match="CUDA"):
        maskc.attention(q, k, v, pattern, backend="triton")


def test_bad_calls_are_refused_with_reasons():
    pattern = maskc.compile("specs/longformer.yaml", seq_len=64, block_size=32, heads=1)
    q, k, v = _inputs(1, 1, 1, 64, 16, 16, torch.float32, seed=1)
    assert "float64" in get_backend("triton").supports(q.double(), k.double(), v.double(), pattern)
    wide = torch.zeros(1, 1, 64, 512)
    assert "head dim 512" in get_backend("triton").supports(wide, wide, wide, pattern)
    with pytest.raises(BackendError, match="seq_len"):
        maskc.attention(q[:, :, :32], k[:, :, :40], v[:, :, :40], pattern, backend="triton", k_offset=30)
    assert os.environ["TRITON_INTERPRET"] == "1"


@pytest.mark.parametrize("per", ["sequence", "document"])
def test_token_lists_past_the_table_limit_match_cpu_reference(monkeypatch, per):
    """Past n = 2**24 a token list has no n-long table: kernels read its pages and per-document
    sets a binary search. Forced here at small n (pages of 64 positions, one of them empty)."""
    import maskc.rules.tokens as tokens

    monkeypatch.setattr(tokens, "_MEMBER_TABLE_LIMIT", 0)
    monkeypatch.setattr(tokens, "PAGE_BITS", 6)
    spec = maskc.Spec(
        name=f"pages-{per}",
        pattern=[
            {"window": {"size": 4}},
            {"global": {"tokens": [0, 33, 77, 120, 199], "direction": "rows", "per": per}},
            {"global": {"tokens": [1, 20, 64, 65, 130, 198], "direction": "columns", "per": per}},
        ],
    )  # five runs each: more than a predicate compares (emit.RUNS_AS_COMPARISONS)
    pattern = maskc.compile(spec, seq_len=200, block_size=32)
    if per == "sequence":
        assert plan_for(pattern).source().count("_pages = mask_args[") == 2  # each list's pages
    q, k, v = _inputs(1, 1, 1, 200, 16, 16, torch.float32, seed=5)
    documents = torch.tensor([[0] * 90 + [1] * 110]) if per == "document" else None
    outs = []
    for backend, cast in (("triton", lambda x: x), ("cpu", lambda x: x.double())):
        outs.append(maskc.attention(cast(q), cast(k), cast(v), pattern, backend=backend, documents=documents))
    assert _relative(*outs) < 1e-4


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 300), max_size=40))
def test_token_runs_against_brute_force(members: set[int]) -> None:
    """The runs of a sorted list hold exactly its positions, each run a maximal stretch of neighbours."""
    runs = token_runs(np.array(sorted(members), dtype=np.int64))
    assert {p for first, last in runs for p in range(first, last + 1)} == members
    assert all(first <= last for first, last in runs)
    assert all(later[0] > earlier[1] + 1 for earlier, later in itertools.pairwise(runs))


@pytest.mark.parametrize("tokens", [[0], [7, 8, 9], [0, 2, 4, 6], [0, 2, 4, 6, 8], list(range(0, 100, 3))])
def test_token_lists_compared_or_looked_up_match_cpu_reference(tokens: list[int]) -> None:
    """A list of at most RUNS_AS_COMPARISONS runs is compared in the predicate (no table), a longer one
    looked up in its table; both as rows and as columns, against the CPU reference."""
    spec = maskc.Spec(
        name="tokens",
        pattern=[
            {"window": {"size": 4}},
            {"global": {"tokens": tokens, "direction": "rows"}},
            {"global": {"tokens": [t + 1 for t in tokens], "direction": "columns"}},
        ],
    )
    pattern = maskc.compile(spec, seq_len=130, block_size=32)
    compared = len(token_runs(np.array(tokens, dtype=np.int64))) <= RUNS_AS_COMPARISONS
    assert ("_members" not in plan_for(pattern).source()) == compared
    q, k, v = _inputs(1, 1, 1, 130, 16, 16, torch.float32, seed=8)
    out = maskc.attention(q, k, v, pattern, backend="triton")
    want = maskc.attention(q.double(), k.double(), v.double(), pattern, backend="cpu")
    assert _relative(out, want) < 1e-4


def test_a_per_document_token_list_no_document_reaches(monkeypatch):
    """Rank 150 of documents of 90 and 110 tokens is nobody: the list is empty, past the table limit
    too (host binary search, run-time tables, compile-time documents), and only the window holds."""
    import maskc.rules.tokens as tokens

    monkeypatch.setattr(tokens, "_MEMBER_TABLE_LIMIT", 0)
    spec = maskc.Spec(
        name="nobody",
        pattern=[{"window": {"size": 4}}, {"global": {"tokens": [150], "direction": "rows", "per": "document"}}],
    )
    ids = [0] * 90 + [1] * 110
    window_only = maskc.compile(maskc.Spec(name="window", pattern={"window": {"size": 4}}), seq_len=200, block_size=32)
    fixed = maskc.compile(spec, seq_len=200, block_size=32, documents=ids)
    assert np.array_equal(fixed.to_dense(), window_only.to_dense())
    q, k, v = _inputs(1, 1, 1, 200, 16, 16, torch.float32, seed=6)
    pattern = maskc.compile(spec, seq_len=200, block_size=32)
    out = maskc.attention(q, k, v, pattern, backend="triton", documents=torch.tensor([ids]))
    want = maskc.attention(q.double(), k.double(), v.double(), window_only, backend="cpu")
    assert _relative(out, want) < 1e-4
    # the documents given at compile time: the kernel's predicate holds the empty list itself
    assert _relative(maskc.attention(q, k, v, fixed, backend="triton"), want) < 1e-4


def test_a_call_that_needs_no_gradient_gives_the_same_output():
    """Without grad (grad mode off, or no input requiring it) the forward runs without the autograd
    function: same output and lse, no graph recorded."""
    pattern = maskc.compile("specs/longformer.yaml", seq_len=128, block_size=32, heads=2)
    q, k, v = _inputs(1, 2, 2, 128, 16, 16, torch.float32, seed=3)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    want_out, want_lse = maskc.attention(*leaves, pattern, backend="triton", return_lse=True)
    assert want_out.grad_fn is not None
    with torch.no_grad():
        out, lse = maskc.attention(*leaves, pattern, backend="triton", return_lse=True)
    plain_out, plain_lse = maskc.attention(q, k, v, pattern, backend="triton", return_lse=True)
    for got, want in ((out, want_out), (lse, want_lse), (plain_out, want_out), (plain_lse, want_lse)):
        assert got.grad_fn is None
        assert torch.equal(got, want.detach())


def test_forward_mode_derivatives_are_refused_not_dropped():
    """Dual inputs do not require grad, but their tangent must not be silently lost."""
    from torch.autograd import forward_ad

    pattern = maskc.compile("specs/longformer.yaml", seq_len=128, block_size=32, heads=2)
    q, k, v = _inputs(1, 2, 2, 128, 16, 16, torch.float32, seed=4)
    with forward_ad.dual_level(), pytest.raises((NotImplementedError, RuntimeError)):
        maskc.attention(forward_ad.make_dual(q, torch.ones_like(q)), k, v, pattern, backend="triton")


def test_an_open_forward_mode_level_without_tangents_takes_the_no_grad_path(monkeypatch):
    """Inside `dual_level()` with no input carrying a tangent, nothing can be asked of the call: it
    runs without the autograd function, as outside the level, and gives the same output."""
    from torch.autograd import forward_ad

    from maskc.backends.triton import function

    pattern = maskc.compile("specs/longformer.yaml", seq_len=128, block_size=32, heads=2)
    q, k, v = _inputs(1, 2, 2, 128, 16, 16, torch.float32, seed=5)
    want = maskc.attention(q, k, v, pattern, backend="triton")
    applied: list[bool] = []
    original = function.EagerAttention.apply
    monkeypatch.setattr(function.EagerAttention, "apply", lambda *a: applied.append(True) or original(*a))
    with forward_ad.dual_level():
        got = maskc.attention(q, k, v, pattern, backend="triton")
    assert not applied and torch.equal(got, want)
