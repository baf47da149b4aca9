"""Pass schedules on a CUDA GPU: every static spec in specs/ with each lowering forced on
("split") and with the cost model's choice ("auto"), forward, lse and gradients against the
float32 chunked reference of test_triton_gpu.py (the plain mask)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from test_triton_gpu import _check, _relative

import maskc
from maskc.errors import MaskcWarning
from maskc.schedule import schedule_of

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def fixed_first_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kernel's first configuration, untimed."""
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.parametrize("mode", ["auto", "split"])
@pytest.mark.parametrize("n", [4096, 32768])
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_scheduled(path: Path, n: int, mode: str) -> None:
    spec = maskc.load(path)
    if spec.is_dynamic():
        pytest.skip("run-time patterns run as one pass")
    if spec.grid is not None:  # a grid fixes its length: run it once, at its own size
        if n != 4096:
            pytest.skip(f"a grid spec has one length, its grid's ({spec.grid.tokens} tokens)")
        n = spec.grid.tokens
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        heads = spec.heads if spec.head_patterns else 2
        pattern = maskc.compile(spec, seq_len=n, heads=heads, schedule=mode)
    schedule_of(pattern)
    _check(pattern, batch=1, kv_heads=1, head_dim=64, dtype=torch.bfloat16)


def _attend(pattern: maskc.CompiledPattern, inputs: list[torch.Tensor], grads: tuple[torch.Tensor, torch.Tensor]):
    """(out, lse, dq, dk, dv) of one Triton call, its loss weighing out and the finite lses."""
    leaves = [x.clone().requires_grad_() for x in inputs]
    out, lse = maskc.attention(*leaves, pattern, backend="triton", return_lse=True)
    loss = (out.float() * grads[0]).sum() + torch.where(torch.isfinite(lse), lse * grads[1], 0).sum()
    return (out.detach(), lse.detach(), *torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize(
    ("name", "n"), [("sparse_transformer_strided", 32768), ("sparse_transformer_fixed", 32768), ("natten_2d", None)]
)
def test_passes_match_one_pass(name: str, n: int | None) -> None:
    """The scheduled path (gathers, passes, fused merge) against the same spec run as one pass:
    outputs, lse (its gradient included) and dq, dk, dv, bf16, D = 128, GQA 4:2."""
    from maskc.backends.triton.passes import runs_passes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        path = SPECS[0].parent / f"{name}.yaml"
        split, single = (maskc.compile(path, seq_len=n, heads=4, schedule=mode) for mode in ("split", "single"))
    assert runs_passes(split) and not runs_passes(single)
    torch.manual_seed(0)
    size = split.n
    inputs = [torch.randn(1, h, size, 128, device="cuda", dtype=torch.bfloat16) for h in (4, 2, 2)]
    grads = (torch.randn(1, 4, size, 128, device="cuda"), torch.randn(1, 4, size, device="cuda"))
    got, want = _attend(split, inputs, grads), _attend(single, inputs, grads)
    assert torch.equal(torch.isinf(got[1]), torch.isinf(want[1])), f"{name}: rows without keys differ"
    finite = torch.isfinite(want[1])
    assert _relative(got[1][finite], want[1][finite]) < 1e-4, f"{name}: lse"
    for label, a, e in zip(["out", "dq", "dk", "dv"], (got[0], *got[2:]), (want[0], *want[2:])):
        assert _relative(a, e) < 2e-2, f"{name}: {label}"
