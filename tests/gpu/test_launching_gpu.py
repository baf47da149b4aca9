"""Kernel launches from the launch memory (backends/triton/launching.py) on a CUDA GPU: calls that
skip Triton's binding give exactly what Triton's own launches give, for static patterns whose
Gluon kernels split long lines (BigBird, Longformer) and for a run-time layout (packed documents,
built by the compaction kernels), forward and backward, and they do skip it."""

from __future__ import annotations

import pytest
import torch

import maskc
from maskc.backends.triton import launching

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

N = 4096
CASES = {
    "bigbird": ("specs/bigbird.yaml", None),
    "longformer": ("specs/longformer.yaml", None),
    "documents": (
        {"name": "docs", "causal": True,
         "pattern": {"intersect": [{"document": {}}, {"window": {"before": 255, "after": 0}}]}},
        [700, 1300, 96, 2000],
    ),
}  # fmt: skip


def _run(pattern, documents, q, k, v, d_out) -> list[torch.Tensor]:
    """Output and gradients of one call on leaves that share q's, k's and v's storage and offsets;
    a new documents tensor each call, so that its layout is built (by the compaction kernels) in
    every call rather than reused from the last."""
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    documents = None if documents is None else documents.clone()
    out = maskc.attention(*leaves, pattern, backend="triton", documents=documents)
    out.backward(d_out)
    return [out.detach(), *(x.grad for x in leaves)]


@pytest.mark.parametrize("name", list(CASES))
def test_remembered_launches_match_tritons(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    spec, lengths = CASES[name]
    spec = maskc.Spec(**spec) if isinstance(spec, dict) else spec
    pattern = maskc.compile(spec, seq_len=N, heads=16)
    documents = None if lengths is None else torch.as_tensor(maskc.ids_from_lengths(lengths), device="cuda")[None]
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, d_out = (torch.randn(1, 16, N, 128, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(4))
    monkeypatch.setenv("MASKC_FAST_LAUNCH", "0")
    want = _run(pattern, documents, q, k, v, d_out)
    monkeypatch.setenv("MASKC_FAST_LAUNCH", "check")  # every remembered launch bound by Triton too
    _run(pattern, documents, q, k, v, d_out)  # first sight of each signature: Triton's launch
    launches = _launches_counted(monkeypatch)
    before = launching.remembered_launches()
    got = _run(pattern, documents, q, k, v, d_out)
    assert launching.remembered_launches() - before == len(launches) > 0, "a launch did not come from the memory"
    for label, a, b in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert torch.equal(a, b), label


def _launches_counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kernels launched through the memory's path from now on, one entry a launch."""
    seen: list[str] = []
    original = launching._Kernel.launch

    def counted(self, grid, args, kwargs, checking=False):
        seen.append(self.kernel.fn.__name__)
        return original(self, grid, args, kwargs, checking)

    monkeypatch.setattr(launching._Kernel, "launch", counted)
    return seen


def test_inputs_off_sixteen_bytes_take_their_own_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """q, k, v starting one element past a 16-byte boundary after aligned calls: Triton compiles
    other kernels for them (no alignment hint, no descriptors), and so must the memory."""
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    pattern = maskc.compile("specs/longformer.yaml", seq_len=N, heads=16)
    gen = torch.Generator(device="cuda").manual_seed(2)
    shape = (1, 16, N, 128)
    aligned = [torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(4)]
    shifted = [torch.randn(x.numel() + 1, device="cuda", dtype=torch.bfloat16, generator=gen)[1:].view(shape)
               for x in aligned[:3]]  # fmt: skip
    assert all(x.data_ptr() % 16 for x in shifted)
    monkeypatch.setenv("MASKC_FAST_LAUNCH", "0")
    want = _run(pattern, None, *shifted, aligned[3])
    monkeypatch.setenv("MASKC_FAST_LAUNCH", "check")
    for _ in range(2):
        _run(pattern, None, *aligned)
    got = _run(pattern, None, *shifted, aligned[3])
    for label, a, b in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert torch.equal(a, b), label


def test_a_compile_time_flag_that_flips_between_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backward through the lse (HAS_DLSE on) then one without (off), each from the memory, equal
    to Triton's launches: the flag is compiled in, so the memory must key it by value (by type alone,
    the second call ran the first's kernel and read an lse gradient that was not there)."""
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    pattern = maskc.compile("specs/longformer.yaml", seq_len=N, heads=16)
    gen = torch.Generator(device="cuda").manual_seed(1)
    q, k, v, d_out = (torch.randn(1, 16, N, 128, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(4))
    d_lse = torch.randn(1, 16, N, device="cuda", generator=gen)

    def grads(through_lse: bool) -> list[torch.Tensor]:
        leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        out, lse = maskc.attention(*leaves, pattern, backend="triton", return_lse=True)
        loss = (out.float() * d_out.float()).sum() + ((lse * d_lse).sum() if through_lse else 0)
        loss.backward()
        return [x.grad for x in leaves]

    monkeypatch.setenv("MASKC_FAST_LAUNCH", "0")
    want = [grads(True), grads(False)]
    monkeypatch.setenv("MASKC_FAST_LAUNCH", "check")
    grads(True), grads(False)  # first sight of each signature
    got = [grads(True), grads(False)]
    for case, (a, b) in enumerate(zip(got, want, strict=True)):
        for label, x, y in zip(("dq", "dk", "dv"), a, b, strict=True):
            assert torch.equal(x, y), (case, label)
