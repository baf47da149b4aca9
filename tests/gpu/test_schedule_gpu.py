"""Pass schedules on a CUDA GPU: every static spec in specs/ with each lowering forced on
("split") and with the cost model's choice ("auto"), forward, lse and gradients against the
float32 chunked reference of test_triton_gpu.py (the plain mask)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from test_triton_gpu import _check

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
