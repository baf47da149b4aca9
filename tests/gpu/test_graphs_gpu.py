"""Whole training steps of attention captured in CUDA graphs (torch.cuda.make_graphed_callables, and
steps unrolled in one graph): forward and backward replayed on new inputs, against the float32
reference of the same inputs.

Capture is how a call whose GPU work is shorter than its Python runs without its host time (the
benchmarks' `graph_*` columns). The cases cover each kind of call: one static pass, a schedule of
passes (gathers, passes, merge; strided, and NATTEN's tiled pass), and layouts built per call from
run-time documents (inside the compaction kernels, or through tile kinds where sinks count from each
document's start), a top-k selection and k-means clusters (run in cluster order).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from test_triton_gpu import TOLERANCE, _reference, _relative

import maskc
from maskc.backends.triton.passes import runs_passes
from maskc.calls import check_shapes, static_patterns
from maskc.errors import MaskcWarning

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

LENGTHS = [595, 303, 642, 450, 293, 1466, 3488, 955]
SPECS = {
    "causal window 1024": {"causal": True, "pattern": {"window": {"before": 1023, "after": 0}}},
    "strided, l = 128 (residue pass and window pass)": {
        "causal": True,
        "block_size": 128,
        "pattern": [{"window": {"before": 128, "after": 0}}, {"stride": {"every": 128}}],
    },
    "document-causal window 1024": {
        "causal": True,
        "pattern": {"intersect": [{"document": {}}, {"window": {"before": 1023, "after": 0}}]},
    },
    "document-causal window 1024 + 4 sinks per document": {
        "causal": True,
        "pattern": [
            {"intersect": [{"document": {}}, {"window": {"before": 1023, "after": 0}}]},
            {"sink": {"count": 4, "per": "document"}},
        ],
    },
    "top-k 8 blocks of 64 + causal window 256 + 4 sinks": {
        "causal": True,
        "block_size": 64,
        "pattern": [{"window": {"before": 255, "after": 0}}, {"topk": {"blocks": 8}}, {"sink": {"count": 4}}],
    },
    "k-means routing, 32 clusters, causal (cluster order)": {
        "causal": True,
        "pattern": {"cluster": {"clusters": 32}},
    },
    "NATTEN 2-D 64 x 64, kernel 13 x 13, row-major (tiled pass)": {
        "grid": {"shape": [64, 64]},
        "pattern": {"neighborhood": {"kernel": [13, 13]}},
    },
}


@pytest.fixture(autouse=True)
def no_tf32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def _setup(name: str, heads: int) -> tuple[maskc.CompiledPattern, torch.Tensor | None]:
    """The pattern (its passes forced where the name says so) and its documents, if it reads any."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        spec = maskc.Spec.model_validate({"name": name, **SPECS[name]})
        schedule = "split" if "pass" in name else "single"
        pattern = maskc.compile(spec, seq_len=None if spec.grid else sum(LENGTHS), heads=heads, schedule=schedule)
    assert runs_passes(pattern) == ("pass" in name)
    documents = None
    if "document" in name:
        documents = torch.as_tensor(maskc.ids_from_lengths(LENGTHS), device="cuda")[None]
    return pattern, documents


def _inputs(heads: int, n: int) -> list[torch.Tensor]:
    return [torch.randn(1, heads, n, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in "qkv"]


def _check_against_reference(pattern, documents, leaves, out, g) -> None:
    """out and the leaves' gradients against the float32 reference of the same inputs."""
    plain = [x.detach() for x in leaves]
    resolved = static_patterns(pattern, plain[0], plain[1], check_shapes(*plain, pattern), documents)
    ref_out, _, *ref_grads = _reference(resolved, *plain, g, 1 / math.sqrt(128))
    bound = TOLERANCE[torch.bfloat16]
    assert _relative(out, ref_out) < bound
    for got, want in zip((x.grad for x in leaves), ref_grads):
        assert _relative(got, want) < bound


@pytest.mark.parametrize("name", list(SPECS))
def test_graphed_callable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda.make_graphed_callables: forward and backward captured apart, replayed on new inputs
    (and new documents, read in place), each kernel's first configuration."""
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    torch.manual_seed(3)
    heads = 4
    pattern, documents = _setup(name, heads)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return maskc.attention(q, k, v, pattern, backend="triton", documents=documents)

    graphed = torch.cuda.make_graphed_callables(attend, tuple(_inputs(heads, pattern.n)))
    if documents is not None:
        documents.copy_(torch.as_tensor(maskc.ids_from_lengths(LENGTHS[::-1]), device="cuda")[None])
    leaves = _inputs(heads, pattern.n)
    g = torch.randn(1, heads, pattern.n, 128, device="cuda", dtype=torch.bfloat16)
    out = graphed(*leaves)
    out.backward(g)
    _check_against_reference(pattern, documents, leaves, out, g)


@pytest.mark.parametrize("name", list(SPECS))
def test_tuned_steps_in_one_graph(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tuned kernels (the tuner times candidates on the first call, outside the capture), then two
    whole forward+backward steps unrolled in one graph on a side stream, as the benchmarks'
    do_bench_cudagraph captures them; the replay's last step against the reference."""
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "1")
    torch.manual_seed(4)
    heads = 4
    pattern, documents = _setup(name, heads)
    leaves = _inputs(heads, pattern.n)
    g = torch.randn(1, heads, pattern.n, 128, device="cuda", dtype=torch.bfloat16)

    def step() -> torch.Tensor:
        for x in leaves:
            x.grad = None
        out = maskc.attention(*leaves, pattern, backend="triton", documents=documents)
        out.backward(g)
        return out

    step()  # tuning and first builds
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
            out = step()
    torch.cuda.current_stream().wait_stream(stream)
    for x in leaves:
        with torch.no_grad():
            x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    _check_against_reference(pattern, documents, leaves, out, g)


def test_index_constants_first_made_inside_a_capture(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run-time layout's index constants (the plan's StaticMaps tensors) first made inside a capture
    are only recorded there (they hold nothing until a replay): an eager call made before any replay
    must build its own, not read those, and match the reference."""
    from maskc.backends.triton.plans import plan_for

    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    torch.manual_seed(5)
    heads = 4
    # per-document sinks take the general build (tile kinds, then tables), which keeps index constants;
    # documents beside static rules alone build inside the compaction and keep none
    pattern, documents = _setup("document-causal window 1024 + 4 sinks per document", heads)
    q, k, v = (torch.randn(1, heads, pattern.n, 128, device="cuda", dtype=torch.bfloat16) for _ in "qkv")
    maskc.attention(q, k, v, pattern, backend="triton", documents=documents)  # kernels, static tables
    kept = plan_for(pattern)._static_maps._tensors
    assert kept, "the layout build keeps no index constants: this test no longer tests anything"
    kept.clear()  # as if this call's shape were new
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph):
        maskc.attention(q, k, v, pattern, backend="triton", documents=documents)
    torch.cuda.current_stream().wait_stream(stream)
    assert not kept, "constants made inside the capture were kept"
    out = maskc.attention(q, k, v, pattern, backend="triton", documents=documents)
    resolved = static_patterns(pattern, q, k, check_shapes(q, k, v, pattern), documents)
    ref_out, *_ = _reference(resolved, q, k, v, torch.zeros_like(q), 1 / math.sqrt(128))
    assert _relative(out, ref_out) < TOLERANCE[torch.bfloat16]
