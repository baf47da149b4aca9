"""The run-time layout's kernels compiled on a CUDA GPU, at the benchmark's size (n = 32768, blocks of
64, 16 heads) and at sizes off the kernels' tiles: the top-k selection equals torch's stable sort on
the same scores (with ties, NaN, ±inf, ±0), and the tile tables compacted from tile kinds list every
tile of each kind, for both walks, from contiguous maps and from views; more groups than a grid's
second axis holds; document kinds decided inside the compaction equal those of maps made by torch."""

from __future__ import annotations

import pytest
import torch

from maskc.backends.triton.compaction import BLOCK_L, BLOCK_W, compact_document_kinds, compact_kinds
from maskc.backends.triton.selection import LARGEST_BLOCKS, select_top_blocks
from maskc.selection import sort_select

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("ties", [False, True])
def test_selection_at_the_benchmark_size(causal: bool, ties: bool) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    scores = torch.randn(16, 512, 512, device="cuda", generator=gen)
    if ties:
        scores = scores.mul(2).round()
    for count in (1, 16, 300):
        assert torch.equal(select_top_blocks(scores, count, causal), sort_select(scores, count, causal))


def _special_scores(groups: int, blocks: int, seed: int) -> torch.Tensor:
    """Few levels (many ties, −0 among them), with NaN, −inf and +inf sprinkled in."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    scores = torch.randint(-3, 4, (groups, blocks, blocks), device="cuda", generator=gen).float()
    scores = torch.where(torch.rand(scores.shape, device="cuda", generator=gen) < 0.5, scores, -scores)
    special = torch.rand(scores.shape, device="cuda", generator=gen)
    scores[special < 0.05] = float("nan")
    scores[(special >= 0.05) & (special < 0.08)] = float("-inf")
    scores[(special >= 0.08) & (special < 0.1)] = float("inf")
    return scores


@pytest.mark.parametrize("blocks", [1, 7, 100, 513, 2049, LARGEST_BLOCKS])
@pytest.mark.parametrize("causal", [True, False])
def test_selection_of_rows_off_the_tile(blocks: int, causal: bool) -> None:
    scores = _special_scores(2, blocks, blocks)
    for count in (1, 5, blocks // 2 + 1, blocks + 3):
        assert torch.equal(select_top_blocks(scores, count, causal), sort_select(scores, count, causal))


def test_selection_of_more_groups_than_a_second_grid_axis_holds() -> None:
    scores = _special_scores(70_000, 2, 7)
    assert torch.equal(select_top_blocks(scores, 1, True), sort_select(scores, 1, True))


def _kind_lists(kind: torch.Tensor, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pointers and indices of one kind by torch: nonzero lists in row-major order are sorted per line."""
    groups, lines, _ = kind.shape
    where = (kind == level).nonzero()  # (stored, 3): group, line, tile, in order
    counts = torch.zeros(groups * lines, dtype=torch.int64, device=kind.device)
    counts.index_add_(0, where[:, 0] * lines + where[:, 1], torch.ones_like(where[:, 0]))
    ends = counts.view(groups, lines).flatten().cumsum(0).view(groups, lines)
    pointers = torch.cat([ends - counts.view(groups, lines), ends[:, -1:]], dim=1).flatten()
    return pointers.int(), where[:, 2].int()


@pytest.mark.parametrize("transpose", [False, True])
def test_compaction_at_the_benchmark_size(transpose: bool) -> None:
    gen = torch.Generator(device="cuda").manual_seed(1)
    kind = torch.randint(0, 3, (16, 512, 512), device="cuda", dtype=torch.int8, generator=gen)
    kind[3] = 0  # an empty map among the others
    _check_compaction(kind, transpose)


def _check_compaction(kind: torch.Tensor, transpose: bool) -> None:
    pointers, indices, order = compact_kinds(kind, transpose)
    maps = kind.transpose(1, 2).contiguous() if transpose else kind.contiguous()
    for at, level in enumerate((2, 1)):
        want_ptr, want_idx = _kind_lists(maps, level)
        assert torch.equal(pointers[at], want_ptr)
        assert torch.equal(indices[at, : len(want_idx)], want_idx)
        assert not indices[at, len(want_idx) :].any()
    lengths = (maps > 0).sum(dim=(0, 2))  # the programs' order: most stored tiles first, ties in line order
    assert torch.equal(order, torch.sort(lengths, descending=True, stable=True).indices.to(torch.int32))


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, BLOCK_L + 1, BLOCK_W - 1), (2, 3 * BLOCK_L - 5, 2 * BLOCK_W + 7)])
@pytest.mark.parametrize("transpose", [False, True])
def test_compaction_off_the_tile(shape: tuple[int, int, int], transpose: bool) -> None:
    gen = torch.Generator(device="cuda").manual_seed(sum(shape))
    _check_compaction(torch.randint(0, 3, shape, device="cuda", dtype=torch.int8, generator=gen), transpose)


@pytest.mark.parametrize("transpose", [False, True])
def test_compaction_of_views(transpose: bool) -> None:
    """A transposed map, a strided slice and a map expanded over groups (stride 0) are read through
    their strides."""
    gen = torch.Generator(device="cuda").manual_seed(2)
    kind = torch.randint(0, 3, (4, 300, 200), device="cuda", dtype=torch.int8, generator=gen)
    for view in (kind.transpose(1, 2), kind[:, 5:290:3, ::2], kind[1:2].expand(5, -1, -1)):
        _check_compaction(view, transpose)


def test_compaction_of_more_groups_than_a_second_grid_axis_holds() -> None:
    gen = torch.Generator(device="cuda").manual_seed(3)
    _check_compaction(torch.randint(0, 3, (70_000, 2, 3), device="cuda", dtype=torch.int8, generator=gen), False)


#: The benchmark's document lengths (bench_runtime.py), 32768 positions.
LENGTHS = (2381, 1211, 2568, 1799, 1174, 5864, 13954, 3817)


def _document_map(labels: torch.Tensor, block_m: int, block_n: int) -> torch.Tensor:
    """(B, R, C) kinds of "same document" from which documents each tile's rows and columns hold (not
    from the tiles' first and last numbers, as the kernels find them): a tile meets a document when
    both sides hold it, and is full when both hold that one alone."""
    batch, n = labels.shape
    documents = int(labels.max()) + 1

    def presence(size: int) -> torch.Tensor:
        tiles = -(-n // size)
        tile = torch.arange(n, device=labels.device) // size
        held = torch.zeros(batch, tiles, documents, device=labels.device)
        held[torch.arange(batch, device=labels.device)[:, None], tile[None, :], labels.long()] = 1.0
        return held

    rows, columns = presence(block_m), presence(block_n)
    meets = (rows @ columns.transpose(1, 2)) > 0
    alone = (rows.sum(-1) == 1)[:, :, None] & (columns.sum(-1) == 1)[:, None, :]
    return meets.to(torch.int8) + (meets & alone)


@pytest.mark.parametrize("tile", [(128, 128), (128, 64), (64, 128), (64, 64)])
@pytest.mark.parametrize("transpose", [False, True])
def test_document_compaction_at_the_benchmark_size(tile: tuple[int, int], transpose: bool) -> None:
    """Two batch rows (the benchmark's documents, and the same reversed), 45 positions short of a whole
    tile (the last tiles clipped), numbers spaced out (only their order matters), with the causal map
    and with none."""
    ids = [torch.repeat_interleave(torch.arange(8), torch.tensor(lengths)) for lengths in (LENGTHS, LENGTHS[::-1])]
    labels = torch.stack(ids)[:, :-45].to(device="cuda", dtype=torch.int32)
    labels = labels * 3
    n = labels.shape[1]
    rows, columns = -(-n // tile[0]), -(-n // tile[1])
    r = torch.arange(rows, device="cuda")[:, None]
    c = torch.arange(columns, device="cuda")[None, :]
    first_row, last_row = r * tile[0], (r + 1) * tile[0] - 1
    first_col, last_col = c * tile[1], (c + 1) * tile[1] - 1
    causal = (first_col <= last_row).to(torch.int8) + (last_col <= first_row)
    documents = _document_map(labels, *tile)
    for fixed, want in ((causal, torch.minimum(documents, causal)), (None, documents)):
        got = compact_document_kinds(labels, fixed, *tile, transpose)
        assert all(torch.equal(a, b) for a, b in zip(got, compact_kinds(want, transpose), strict=True))
