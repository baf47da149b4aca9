"""Host work of run-time patterns on a CUDA GPU: a warm call of each of bench_runtime.py's cases
(documents, documents + window, top-k, LSH in cluster order, labelled by the kernel) at n = 8192 with
compiled kernels reads nothing back to the host and uploads nothing, forward and forward+backward,
with the documents' order checked by default (on the device), its layout built or reused. The CPU test
(tests/test_runtime_host.py) checks the same under the interpreter; here copies to the CPU are
visible as such."""

from __future__ import annotations

import pytest
import torch
from hostops import runtime_cases

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CASES = ["document-causal", "window", "top-k", "lsh"]


@pytest.fixture(scope="module")
def cases() -> dict:
    made = runtime_cases(n=8192, block=64, heads=4, head_dim=128, device="cuda", dtype=torch.bfloat16)
    return dict(zip(CASES, made, strict=True))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("reuse", ["0", "1"], ids=["built", "reused"])
def test_a_run_time_call_on_the_gpu_reads_nothing_back(
    cases, monkeypatch, name: str, backward: bool, reuse: str
) -> None:
    """Built per call (MASKC_REUSE_LAYOUT=0, a batch's first layer) or reused from the previous call with
    the same documents (a later layer)."""
    monkeypatch.delenv("MASKC_CHECK_DOCUMENTS", raising=False)
    monkeypatch.setenv("MASKC_REUSE_LAYOUT", reuse)
    counts = cases[name].count(backward)
    torch.cuda.synchronize()
    assert counts.total_ops > 0, "the counter saw no op: it does not watch the call"
    assert counts.total_reads == 0, f"device→host reads: {counts.events}"
    assert counts.total_uploads == 0, f"host→device uploads: {counts.events}"
