"""The run-time layout's kernels compiled on a CUDA GPU, at the benchmark's size (n = 32768, blocks of
64, 16 heads): the top-k selection equals torch's stable sort on the same scores (with ties), and the
tile tables compacted from tile kinds list every tile of each kind, for both walks."""

from __future__ import annotations

import pytest
import torch

from maskc.backends.triton.compaction import compact_kinds
from maskc.backends.triton.selection import select_top_blocks
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
    pointers, indices, lengths = compact_kinds(kind, transpose)
    maps = kind.transpose(1, 2).contiguous() if transpose else kind
    for at, level in enumerate((2, 1)):
        want_ptr, want_idx = _kind_lists(maps, level)
        assert torch.equal(pointers[at], want_ptr)
        assert torch.equal(indices[at, : len(want_idx)], want_idx)
        assert not indices[at, len(want_idx) :].any()
    assert torch.equal(lengths, (maps > 0).sum(dim=(0, 2), dtype=torch.int32))
