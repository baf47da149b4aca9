"""Top-k block selection (maskc/selection.py): its kept constants never change what it selects."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from maskc import selection, tracing


def _brute_force(q: torch.Tensor, k: torch.Tensor, blocks: int, block: int, causal: bool) -> torch.Tensor:
    """The definition, block pair by block pair: mean query · mean key, best `blocks` candidates, ties low."""
    b, h, n, _ = q.shape
    nb = -(-n // block)
    out = torch.zeros(b, h, nb, nb, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            qm = [q[bi, hi, i * block : (i + 1) * block].double().mean(0) for i in range(nb)]
            km = [k[bi, hi, j * block : (j + 1) * block].double().mean(0) for j in range(nb)]
            for i in range(nb):
                candidates = [j for j in range(nb) if not causal or j <= i]
                ranked = sorted(candidates, key=lambda j: (-float(qm[i] @ km[j]), j))
                out[bi, hi, i, ranked[:blocks]] = True
    return out


def test_kept_constants_give_the_definition_across_sizes_and_modes() -> None:
    gen = torch.Generator().manual_seed(0)
    for n, block, blocks, causal in [(100, 16, 2, True), (96, 16, 3, False), (100, 16, 2, True), (64, 8, 1, True)]:
        q, k = (torch.randn(1, 2, n, 4, generator=gen) for _ in range(2))
        params = SimpleNamespace(blocks=blocks, share="head")
        want = _brute_force(q, k, blocks, block, causal)
        for _ in range(2):  # the second call reads the kept constants
            assert torch.equal(selection.select_blocks(q, k, params, block, causal), want)


def test_query_heads_sharing_a_key_head_score_against_it() -> None:
    """Grouped keys (GQA): query head h scores against key head h // group, as the definition does on
    the keys repeated per query head."""
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 6, 90, 4, generator=gen), torch.randn(2, 2, 90, 4, generator=gen)
    want = _brute_force(q, k.repeat_interleave(3, dim=1), 3, 16, True)
    assert torch.equal(selection.select_blocks(q, k, SimpleNamespace(blocks=3, share="head"), 16, True), want)


def test_constants_made_in_inference_mode_are_not_kept() -> None:
    """An inference tensor kept and reused by a later call that records autograd would raise."""
    selection._CONSTANTS.clear()
    q = torch.randn(1, 1, 48, 4)
    with torch.inference_mode():
        selection.block_means(q, 16)
    assert not selection._CONSTANTS
    leaf = q.clone().requires_grad_()
    selection.block_means(leaf, 16).sum().backward()
    assert leaf.grad is not None and selection._CONSTANTS


def test_kept_constants_are_never_dropped(monkeypatch) -> None:
    """A CUDA graph captured after a first call reads the kept constants by address: once kept, a
    constant stays, and past the bound new ones are made per call instead."""
    monkeypatch.setattr(selection, "_CONSTANTS", {})
    monkeypatch.setattr(selection, "_MAX_CONSTANTS", 2)
    first = selection._constant(("a",), lambda: torch.zeros(3))
    selection._constant(("b",), lambda: torch.ones(3))
    extra = selection._constant(("c",), lambda: torch.ones(3))
    assert selection._constant(("a",), lambda: torch.zeros(3)) is first
    assert selection._constant(("c",), lambda: torch.ones(3)) is not extra
    assert set(selection._CONSTANTS) == {("a",), ("b",)}


def test_constants_made_inside_a_capture_are_not_kept(monkeypatch) -> None:
    """Inside a CUDA graph capture a constant's kernels are only recorded: kept, it would give a later
    eager call garbage. Made there, it is used and not kept; the next call outside keeps its own."""
    monkeypatch.setattr(selection, "_CONSTANTS", {})
    monkeypatch.setattr(tracing, "capturing", lambda device: True)
    made = selection._constant(("a",), lambda: torch.zeros(3))
    assert made is not None and not selection._CONSTANTS
    monkeypatch.setattr(tracing, "capturing", lambda device: False)
    kept = selection._constant(("a",), lambda: torch.zeros(3))
    assert list(selection._CONSTANTS) == [("a",)] and selection._CONSTANTS[("a",)] is kept
