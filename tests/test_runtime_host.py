"""Host work of run-time patterns on the Triton backend (TRITON_INTERPRET=1): a call reads nothing back
to the host and uploads nothing (so a GPU's queue never stalls and a CUDA graph can capture it), and the
torch ops of its layout build stay few (counted by tests/hostops.py, bounded loosely so a regression —
a per-head or per-document Python loop, a table built twice — is caught)."""

from __future__ import annotations

import pytest
import torch
from hostops import HostOps, RuntimeCase, counting, runtime_cases
from test_backend_triton import interpreter  # noqa: F401 - the module's TRITON_INTERPRET=1 fixture

import maskc
from maskc import selection
from maskc.backends.triton.reuse import REUSE_LAYOUT
from maskc.documents import CHECK_DOCUMENTS, ORDER_MESSAGE
from maskc.errors import DocumentsError

#: Ops counted at n = 1024, block 64, one head when these bounds were set (forward, forward+backward):
#: document-causal and documents + window 21 / 39 each, top-k 40 / 58, LSH 119 / 140, with the
#: compaction's kernels scanning their counts and ordering the lines themselves (no scan, line sums,
#: sort or cast of their own: four ops fewer a walk). Before that 25 / 47, 25 / 47, 44 / 66 and
#: 127 / 152, with eager calls
#: running the compaction's body directly (`compaction.compacted`), so that its own ops (buffers, scan,
#: line sums: six a walk) are counted; 19 / 35, 19 / 35, 39 / 56 and 122 / 142 while it was counted as
#: one custom op, with the documents' tile kinds decided inside the compaction's kernels
#: (`maskc::compact_document_kinds`: no kind map, no op per combinator). Before that,
#: with the tables compacted by two kernels, a union's static children folded once and tiles
#: classified by int8 kinds (`maskc.tile_kinds`): document-causal 36 / 53, documents + window 37 / 54,
#: top-k + window + sinks 39 / 56 (its selection by torch's sort here, by one kernel on a GPU), LSH in
#: cluster order (its labels by torch here, by one kernel on a GPU) 122 / 142 (20 of them the CPU's
#: search for equal directions, which a GPU does not run). With (any, full) boolean pairs in place of
#: kinds: 39 / 60, 41 / 62, 48 / 69 and 124 / 148. A custom op (`maskc::compact_kinds`, `maskc::select_top`) counts as
#: one op, its launches inside it unseen, so part of the fall from the torch-op tables is the count's
#: view, not fewer launches (the compaction is three: two kernels and a scan). With the tables
#: compacted by torch ops: 62 / 108, 64 / 110, 70 / 116 and 127 / 176; before the layout build was
#: first reworked: 115 / 324, 117 / 330, 140 / 335. The bounds leave room for small changes.
OP_BOUNDS = {"document-causal": (24, 44), "window": (24, 44), "top-k": (44, 62), "lsh": (124, 146)}


@pytest.fixture(scope="module")
def cases() -> dict[str, RuntimeCase]:
    """bench_runtime.py's cases, in OP_BOUNDS' order, small enough for the interpreter."""
    return dict(zip(OP_BOUNDS, runtime_cases(n=1024, block=64, heads=1), strict=True))


@pytest.fixture(scope="module")
def counted(cases) -> dict[tuple[str, bool], HostOps]:
    """Counts of a forward and of a forward+backward of each case, the documents checked as on a GPU.
    The top-k selection's kept constants start empty, as in a process running these patterns (other
    tests in the same worker may have filled the bounded store, and each constant not kept costs ops
    per call)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CHECK_DOCUMENTS, "async")
        patch.setenv(REUSE_LAYOUT, "0")  # every counted call builds its layout, as a batch's first layer
        patch.setattr(selection, "_CONSTANTS", {})
        return {(name, backward): case.count(backward) for name, case in cases.items() for backward in (False, True)}


@pytest.fixture
def async_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documents' order checked as on a GPU by default: without a read back."""
    monkeypatch.setenv(CHECK_DOCUMENTS, "async")


@pytest.mark.parametrize("name", list(OP_BOUNDS))
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
def test_a_run_time_call_reads_nothing_back_and_uploads_nothing(counted, name: str, backward: bool) -> None:
    counts = counted[name, backward]
    assert counts.total_ops > 0, "the counter saw no op: it does not watch the call"
    assert counts.total_reads == 0, f"device→host reads: {counts.events}"
    assert counts.total_uploads == 0, f"host→device uploads: {counts.events}"


@pytest.mark.parametrize("name", list(OP_BOUNDS))
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
def test_the_layout_build_dispatches_few_ops(counted, name: str, backward: bool) -> None:
    counts = counted[name, backward]
    assert counts.total_ops <= OP_BOUNDS[name][backward], counts.table()


@pytest.mark.parametrize("name", ["document-causal", "window"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
def test_a_later_layer_with_the_same_documents_builds_nothing(
    cases, async_check, monkeypatch: pytest.MonkeyPatch, name: str, backward: bool
) -> None:
    """The layout decided by a documents tensor is built by its first call only (backends/triton/reuse.py):
    a later call with the same tensor dispatches the documents' order check (6 ops, async) and the
    kernels' own ops (2 forward, 18 forward+backward), against 41 / 62 when it builds."""
    monkeypatch.delenv(REUSE_LAYOUT, raising=False)
    counts = cases[name].count(backward)
    assert counts.total_ops <= (10, 22)[backward], counts.table()
    assert "backends.triton.runtime" not in counts.table(), counts.table()


def test_the_counter_sees_reads_and_uploads(monkeypatch) -> None:
    """The counter itself: reads and uploads made by maskc's code are counted, others' are not."""
    from maskc.backends.triton.runtime import token_membership
    from maskc.documents import check_documents
    from maskc.rules import TokenSet

    with counting() as counts:
        token_membership(TokenSet(n=4, first=2), torch.arange(6)).any().item()
    assert counts.total_ops > 0 and counts.total_reads == 0, "a read from the test's own frame was charged to maskc"
    monkeypatch.setenv(CHECK_DOCUMENTS, "sync")
    with counting() as counts:
        check_documents(torch.zeros(1, 8, dtype=torch.int64), 1, 8, torch.device("cpu"))
    assert counts.total_reads >= 1, counts.events  # the order checked with a read
    members = TokenSet(n=4, tokens=[0, 2])
    with counting() as counts:
        token_membership(members, torch.arange(6))
    assert counts.total_uploads == 1, counts.events  # the member table, copied to the device once
    with counting() as counts:
        token_membership(members, torch.arange(6))
    assert counts.total_uploads == 0, counts.events


def _decreasing(case) -> torch.Tensor:
    documents = case.documents.clone()
    documents[0, 100] = documents[0, 99] - 1
    return documents


def test_decreasing_documents_fail_without_a_read(cases, async_check) -> None:
    case = cases["document-causal"]
    with pytest.raises(RuntimeError, match="document ids must be non-decreasing"):
        maskc.attention(case.q, case.k, case.v, case.pattern, backend="triton", documents=_decreasing(case))
    assert ORDER_MESSAGE.startswith("maskc: document ids must be non-decreasing")


@pytest.mark.parametrize("mode", ["sync", None])
def test_decreasing_documents_named_by_position_when_checked_with_a_read(cases, monkeypatch, mode) -> None:
    """MASKC_CHECK_DOCUMENTS=sync, and the CPU by default, raise DocumentsError with the position."""
    if mode is None:
        monkeypatch.delenv(CHECK_DOCUMENTS, raising=False)
    else:
        monkeypatch.setenv(CHECK_DOCUMENTS, mode)
    case = cases["document-causal"]
    with pytest.raises(DocumentsError, match="batch element 0, position 100 has id"):
        maskc.attention(case.q, case.k, case.v, case.pattern, backend="triton", documents=_decreasing(case))


def test_an_unknown_check_mode_is_refused(cases, monkeypatch) -> None:
    monkeypatch.setenv(CHECK_DOCUMENTS, "later")
    case = cases["document-causal"]
    with pytest.raises(DocumentsError, match="MASKC_CHECK_DOCUMENTS must be sync, once or async"):
        maskc.attention(case.q, case.k, case.v, case.pattern, backend="triton", documents=case.documents)


def test_documents_checked_once_per_unchanged_tensor(cases, monkeypatch) -> None:
    """The GPU default: the first call with a documents tensor reads its order back, later calls with
    the same unchanged tensor read nothing, and an in-place change is checked again."""
    monkeypatch.setenv(CHECK_DOCUMENTS, "once")
    case = cases["document-causal"]
    documents = case.documents.clone()

    def call() -> None:
        maskc.attention(case.q, case.k, case.v, case.pattern, backend="triton", documents=documents)

    with counting() as counts:
        call()
    assert counts.total_reads >= 1, counts.events  # the order read back
    with counting() as counts:
        call()
    assert counts.total_reads == 0, counts.events
    documents[0, 100] = documents[0, 99] - 1  # in place: the tensor's version moves
    with pytest.raises(DocumentsError, match="batch element 0, position 100 has id"):
        call()
