"""Run-time patterns: documents and top-k blocks resolve to exact masks (brute force), run exactly on the
CPU backend (float64 dense attention, outputs and gradients), and bad input gets a clear error."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, document_spec_dicts, tile_shapes
from test_backend_cpu import assert_relative, dense_attention
from test_compiler_properties import _check_layout

import maskc
from maskc.errors import DocumentsError, MaskcWarning, SpecError
from maskc.selection import block_means, select_blocks

PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _spec(data: dict) -> maskc.Spec:
    return maskc.Spec.model_validate(data)


def _compile(spec: maskc.Spec, **kwargs: object) -> maskc.CompiledPattern:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        return maskc.compile(spec, **kwargs)


# ----------------------------------------------------------------------------- documents: masks


@PROPERTY
@given(document_spec_dicts(), tile_shapes())
def test_document_masks_match_brute_force(case: tuple[dict, int, list[int]], tile: tuple[int, int]) -> None:
    spec_dict, n, lengths = case
    ids = maskc.ids_from_lengths(lengths) * 3 - 5  # any non-decreasing integers, negative ones too
    expected = brute_force_mask(spec_dict, n, ids)
    pattern = _compile(_spec(spec_dict), block_size=tile, documents=ids)
    assert not pattern.dynamic
    assert np.array_equal(pattern.to_dense(), expected)
    _check_layout(pattern.layouts[0], expected)


def test_document_causal_window_is_what_it_says() -> None:
    spec = _spec(
        {
            "name": "doc-swa",
            "causal": True,
            "block_size": 16,
            "pattern": {"intersect": [{"document": {}}, {"window": {"before": 4096, "after": 0}}]},
        }
    )
    lengths = [100, 300, 24]
    dense = _compile(spec, seq_len=424, documents=maskc.ids_from_lengths(lengths)).to_dense()
    expected = np.zeros((424, 424), dtype=bool)
    start = 0
    for length in lengths:
        expected[start : start + length, start : start + length] = np.tril(np.ones((length, length), dtype=bool))
        start += length
    assert np.array_equal(dense, expected)


def test_unresolved_document_pattern_is_dynamic() -> None:
    spec = _spec({"name": "d", "pattern": {"document": {}}})
    pattern = _compile(spec, seq_len=64)
    assert pattern.dynamic
    with pytest.raises(maskc.DynamicPatternError, match="documents"):
        pattern.to_dense()


# ----------------------------------------------------------------------------- documents: attention


def _ids(*rows: list[int]) -> torch.Tensor:
    return torch.as_tensor(np.stack([maskc.ids_from_lengths(r) for r in rows]))


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_cpu_attention_with_documents_matches_dense(kv_heads: int) -> None:
    spec_dict = {
        "name": "doc",
        "causal": True,
        "block_size": 16,
        "pattern": [
            {"intersect": [{"document": {}}, {"window": {"before": 9, "after": 0}}]},
            {"sink": {"count": 2, "per": "document"}},
        ],
    }
    n, gen = 70, torch.Generator().manual_seed(0)
    ids = _ids([10, 31, 29], [70])
    pattern = _compile(_spec(spec_dict), seq_len=n)
    q = torch.randn(2, 2, n, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, kv_heads, n, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out, lse = maskc.attention(q, k, v, pattern, backend="cpu", documents=ids, return_lse=True)
    masks = torch.stack([torch.as_tensor(brute_force_mask(spec_dict, n, ids[b].numpy()))[None] for b in range(2)])
    ref_out, ref_lse = dense_attention(q, k, v, masks, 8**-0.5)
    assert_relative(out, ref_out, "out")
    assert_relative(lse, ref_lse, "lse")
    grad = torch.randn_like(out)
    got = torch.autograd.grad((out * grad).sum() + lse.sum(), (q, k, v))
    want = torch.autograd.grad((ref_out * grad).sum() + ref_lse.sum(), (q, k, v))
    for name, a, b in zip("qkv", got, want):
        assert_relative(a, b, f"d{name}")


def _doc_pattern() -> maskc.CompiledPattern:
    return _compile(_spec({"name": "doc", "causal": True, "block_size": 16, "pattern": {"document": {}}}), seq_len=32)


def _qkv(n: int = 32) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(2, 1, n, 8, dtype=torch.float64) for _ in range(3))


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        (None, "depends on documents"),
        (torch.zeros(2, 32, dtype=torch.float32), "integer ids"),
        (torch.zeros(2, 32, dtype=torch.bool), "integer ids"),
        (torch.zeros(1, 32, dtype=torch.int64), r"shape \(batch, seq_len\) = \(2, 32\)"),
        (torch.zeros(2, 31, dtype=torch.int64), r"shape \(batch, seq_len\) = \(2, 32\)"),
        (torch.zeros(2, 32, dtype=torch.int64, device="meta"), "put them on one device"),
        ([0] * 32, "torch tensor"),
        (torch.tensor([[0] * 16 + [1] * 16, [0] * 10 + [2] * 10 + [1] * 12]), "batch element 1, position 20"),
    ],
)
def test_bad_documents_are_clear_errors(documents: object, message: str) -> None:
    with pytest.raises(DocumentsError, match=message):
        maskc.attention(*_qkv(), _doc_pattern(), backend="cpu", documents=documents)


def test_documents_for_a_pattern_without_documents_is_an_error() -> None:
    pattern = _compile(_spec({"name": "w", "pattern": {"window": {"size": 4}}}), seq_len=32)
    with pytest.raises(DocumentsError, match="no document-dependent part"):
        maskc.attention(*_qkv(), pattern, backend="cpu", documents=torch.zeros(2, 32, dtype=torch.int64))
    with pytest.raises(DocumentsError, match="no document-dependent part"):
        maskc.compile(pattern.spec, seq_len=32, documents=np.zeros(32, dtype=np.int64))


def test_run_time_patterns_refuse_rectangular_calls(backend: str = "cpu") -> None:
    """A pattern resolved over all n positions (documents here) runs on full-length calls only, and
    documents given to a rectangular call of a static pattern are refused as in a full-length one."""
    q, k, v = _qkv()
    documents = torch.zeros(2, 32, dtype=torch.int64)
    with pytest.raises(maskc.BackendError, match="full-length calls"):
        maskc.attention(q[:, :, 16:], k, v, _doc_pattern(), backend=backend, documents=documents)
    with pytest.raises(maskc.BackendError, match="full-length calls"):
        starts = torch.zeros(2, dtype=torch.int64)
        maskc.attention(q, k, v, _doc_pattern(), backend=backend, documents=documents, q_offset=starts)
    static = _compile(_spec({"name": "w", "causal": True, "pattern": {"window": {"size": 4}}}), seq_len=32)
    with pytest.raises(DocumentsError, match="no document-dependent part"):
        maskc.attention(q[:, :, 16:], k, v, static, backend=backend, documents=documents)


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        (np.zeros(31, dtype=np.int64), r"shape \(32,\)"),
        (np.linspace(0, 1, 32), "integer ids"),
        (np.array([0] * 20 + [1] * 6 + [0] * 6), "position 26 has id 0 after 1"),
    ],
)
def test_bad_documents_at_compile_time(documents: np.ndarray, message: str) -> None:
    with pytest.raises(DocumentsError, match=message):
        maskc.compile(_doc_pattern().spec, seq_len=32, documents=documents)


def test_bad_lengths() -> None:
    with pytest.raises(DocumentsError, match="≥ 1"):
        maskc.ids_from_lengths([3, 0])


# ----------------------------------------------------------------------------- top-k


def _brute_selection(q: np.ndarray, k: np.ndarray, blocks: int, block: int, causal: bool) -> np.ndarray:
    """Selection for one (batch, head) by plain loops: exact for integer-valued q, k and block sizes that
    are powers of two (every mean and product is then exact in float32)."""
    n = q.shape[0]
    count = -(-n // block)
    means = [
        (q[b * block : (b + 1) * block].mean(axis=0), k[b * block : (b + 1) * block].mean(axis=0)) for b in range(count)
    ]
    out = np.zeros((count, count), dtype=bool)
    for big_i in range(count):
        candidates = [j for j in range(count) if not causal or j <= big_i]
        ranked = sorted(candidates, key=lambda j: (-float(np.dot(means[big_i][0], means[j][1])), j))
        out[big_i, ranked[:blocks]] = True
    return out


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 9),
    block=st.sampled_from([1, 4, 8, 16]),
    blocks=st.integers(1, 6),
    causal=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_topk_selection_matches_brute_force(count: int, block: int, blocks: int, causal: bool, seed: int) -> None:
    n = count * block  # whole blocks: means of small integers over a power of two are exact
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(-2, 3, (1, 2, n, 4), generator=gen).to(torch.bfloat16)
    k = torch.randint(-2, 3, (1, 2, n, 4), generator=gen).to(torch.bfloat16)  # small integers: many exact ties
    params = maskc.Topk(blocks=blocks)
    chosen = select_blocks(q, k, params, block, causal).numpy()
    for h in range(2):
        q64, k64 = q[0, h].double().numpy(), k[0, h].double().numpy()
        assert np.array_equal(chosen[0, h], _brute_selection(q64, k64, blocks, block, causal))


def test_block_means_of_a_short_last_block() -> None:
    x = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1)
    assert block_means(x, 4).reshape(-1).tolist() == [1.5, 5.5, 8.5]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_block_means_are_float32_means_of_the_inputs(dtype: torch.dtype) -> None:
    """Whatever the input dtype, each block's mean in float32 of its values (the last block short)."""
    x = torch.randn(2, 3, 100, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    means = block_means(x, 16)
    assert means.dtype == torch.float32 and means.shape == (2, 3, 7, 8)
    for j in range(7):
        want = x[..., 16 * j : min(100, 16 * (j + 1)), :].float().mean(dim=-2)
        torch.testing.assert_close(means[..., j, :], want, rtol=1e-6, atol=1e-6)


def test_topk_group_sharing_selects_once_per_group() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 4, 64, 8, generator=gen), torch.randn(1, 2, 64, 8, generator=gen)
    shared = select_blocks(q, k, maskc.Topk(blocks=2, share="group"), 8, True)
    assert torch.equal(shared[:, 0], shared[:, 1]) and torch.equal(shared[:, 2], shared[:, 3])
    own = select_blocks(q, k, maskc.Topk(blocks=2), 8, True)
    assert not torch.equal(own[:, 0], own[:, 1])  # with these inputs the heads differ


@pytest.mark.parametrize("tile", [(16, 16), (32, 16), (16, 64)])
def test_cpu_attention_with_topk_matches_dense(tile: tuple[int, int]) -> None:
    spec_dict = {
        "name": "nsa",
        "causal": True,
        "block_size": 16,
        "pattern": [{"window": {"before": 12, "after": 0}}, {"topk": {"blocks": 2}}, {"sink": {"count": 2}}],
    }
    n, gen = 100, torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, n, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, n, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    pattern = _compile(_spec(spec_dict), seq_len=n, heads=4, block_size=tile)
    out = maskc.attention(q, k, v, pattern, backend="cpu")
    chosen = select_blocks(q.detach(), k.detach(), maskc.Topk(blocks=2), 16, True)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    static = torch.as_tensor(
        brute_force_mask({**spec_dict, "pattern": [spec_dict["pattern"][0], spec_dict["pattern"][2]]}, n)
    )
    masks = (static | chosen[:, :, i // 16, j // 16]) & (j <= i)
    ref = dense_attention(q, k, v, masks, 8**-0.5)[0]
    assert_relative(out, ref, "out")
    grad = torch.randn_like(out)
    got = torch.autograd.grad((out * grad).sum(), (q, k, v))
    want = torch.autograd.grad((ref * grad).sum(), (q, k, v))  # the selection is a constant for the gradient
    for name, a, b in zip("qkv", got, want):
        assert_relative(a, b, f"d{name}")


def test_topk_needs_a_positive_count() -> None:
    with pytest.raises(SpecError, match="blocks"):
        maskc.parse_spec("name: t\npattern: {topk: {blocks: 0}}\n")


# ----------------------------------------------------------------------------- analyses with documents

DOC_SPEC = """name: doc-swa
causal: true
block_size: 16
pattern:
  - intersect: [{document: {}}, {window: {before: 8, after: 0}}]
  - sink: {count: 2, per: document}
"""


def _reach_brute_force(mask: np.ndarray, layers: int) -> np.ndarray:
    """reach[i, j]: key j reaches query i within `layers` layers (residual), by boolean matrix products."""
    step = mask | np.eye(len(mask), dtype=bool)
    reach = np.eye(len(mask), dtype=bool)
    for _ in range(layers):
        reach = (step.astype(np.int64) @ reach.astype(np.int64)) > 0
    return reach


@pytest.mark.parametrize("layers", [1, 3, 4, 6])
def test_verify_checks_reach_inside_each_document(layers: int) -> None:
    spec = maskc.parse_spec(DOC_SPEC)
    lengths = [10, 30, 24, 3]
    ids = maskc.ids_from_lengths(lengths)
    report = maskc.verify(spec, layers, seq_len=67, documents=ids)
    mask = _compile(spec, seq_len=67, documents=ids).to_dense()
    reach = _reach_brute_force(mask, layers)
    must = (ids[:, None] == ids[None, :]) & np.tril(np.ones((67, 67), dtype=bool))
    assert report.reachable == bool(reach[must].all())
    if not report.reachable:
        i, j = report.counterexample
        assert must[i, j] and not reach[i, j]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The maskc command in this process: (exit code, stdout, stderr)."""
    from maskc.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_takes_document_lengths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "doc.yaml")
    Path(path).write_text(DOC_SPEC)
    code, out, _ = _cli(capsys, "verify", path, "--documents", "10,30,24", "--layers", "4")
    assert code == 0 and "of one document" in out
    code, out, _ = _cli(capsys, "verify", path, "--documents", "10,30,24", "--layers", "3")
    assert code == 1 and "min_layers     4" in out
    code, out, _ = _cli(capsys, "show", path, "--documents", "10,30,24")
    assert code == 0 and "n = 64" in out
    code, out, _ = _cli(capsys, "explain", path, "--documents", "100,300,24")
    assert code == 0 and "key in first 2 of each document" in out
    code, _, err = _cli(capsys, "verify", path, "--documents", "10,30", "--seq-len", "64", "--layers", "3")
    assert code == 2 and "sum to 40" in err
    code, _, err = _cli(capsys, "verify", "specs/longformer.yaml", "--documents", "100,300", "--layers", "3")
    assert code == 2 and "no layer of 'longformer' depends on documents" in err


def test_show_draws_topk_resolved_from_a_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nsa.yaml"
    path.write_text(
        "name: nsa\ncausal: true\nblock_size: 8\npattern:\n  - window: {before: 7, after: 0}\n  - topk: {blocks: 2}\n"
    )
    code, first, _ = _cli(capsys, "show", str(path), "--seq-len", "48", "--seed", "3")
    assert code == 0 and "topk blocks=2" in first
    assert _cli(capsys, "show", str(path), "--seq-len", "48", "--seed", "3")[1] == first  # the seed decides
    code, unresolved, _ = _cli(capsys, "show", str(path), "--seq-len", "48")
    assert code == 0 and "topk blocks=2" not in unresolved
    code, explained, _ = _cli(capsys, "explain", str(path), "--seq-len", "48", "--seed", "3")
    assert code == 0 and "selected blocks of 8" in explained


def test_a_pattern_resolved_for_one_call_is_not_saved(tmp_path: Path) -> None:
    spec = _spec({"name": "d", "pattern": {"document": {}}})
    unresolved = _compile(spec, seq_len=32)
    unresolved.save(tmp_path / "unresolved.npz")
    assert maskc.CompiledPattern.load(tmp_path / "unresolved.npz").dynamic
    resolved = _compile(spec, seq_len=32, documents=maskc.ids_from_lengths([12, 20]))
    with pytest.raises(maskc.MaskcError, match="resolved for one call"):
        resolved.save(tmp_path / "resolved.npz")
