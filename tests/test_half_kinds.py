"""The kinds of each partial tile's two halves (`tables.half_kinds`, `Plan.half_kinds`), which let a
computing group of the warp-specialised forward skip a half with no active pair and run a full half
without the predicate: sound against the brute-force mask for random specs, and aligned with the
rows walk's partial tiles."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, spec_dicts

import maskc
from maskc.backends.triton.plans import plan_for
from maskc.errors import MaskcWarning

CPU = torch.device("cpu")


def _partial_tiles(plan, block_m: int, block_n: int) -> list[tuple[int, int, int]]:
    """(layout, row tile, column tile) of every partial tile of the rows walk, in the tables' order."""
    tables = plan.tables("rows", block_m, block_n, CPU)
    pointers, columns, lines = tables.partial_ptr.numpy(), tables.partial_idx.numpy(), tables.lines
    found = []
    for layout in range(len(pointers) // (lines + 1)):
        for line in range(lines):
            at = layout * (lines + 1) + line
            found += [(layout, line, int(c)) for c in columns[pointers[at] : pointers[at + 1]]]
    return found


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=spec_dicts(max_n=120), half=st.sampled_from([4, 8, 16]), block_n=st.sampled_from([8, 16, 32]))
def test_half_kinds_are_sound(case: tuple[dict, int], half: int, block_n: int) -> None:
    """A half said empty holds no active pair, a half said full only active ones (of those inside the
    grid); the codes follow the walk's partial tiles one for one."""
    data, n = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec.model_validate(data), seq_len=n)
    plan = plan_for(pattern)
    codes = plan.half_kinds(2 * half, block_n, CPU).numpy()
    tiles = _partial_tiles(plan, 2 * half, block_n)
    assert len(codes) == max(1, len(tiles))  # padded to one entry when there is none, as the tables are
    mask = brute_force_mask(data, n)
    heads = np.asarray(pattern.head_layout)
    for (layout, line, column), code in zip(tiles, codes, strict=False):
        head_mask = mask[int(np.flatnonzero(heads == layout)[0])] if mask.ndim == 3 else mask
        cols = slice(column * block_n, (column + 1) * block_n)
        for side, kind in enumerate((int(code) & 3, int(code) >> 2)):
            first = (2 * line + side) * half
            block = head_mask[first : first + half, cols]
            if kind == 0:
                assert not block.any(), (layout, line, column, side)
            elif kind == 2:  # every pair inside the grid (the kernel that reads them runs whole tiles only)
                assert block.all(), (layout, line, column, side)


def test_bigbird_partial_tiles_are_half_full_half_empty() -> None:
    """BigBird's blocks are 64 wide, so at 128 × 64 every partial tile has one full and one empty half
    (the case the kinds serve: bench/NOTES.md); Longformer's band gives partial halves too."""
    pattern = maskc.compile("specs/bigbird.yaml", seq_len=2048, heads=2)
    codes = plan_for(pattern).half_kinds(128, 64, CPU).numpy()
    assert len(codes) > 0 and set(codes.tolist()) <= {2, 8}  # full top, empty bottom; or the reverse
    longformer = plan_for(maskc.compile("specs/longformer.yaml", seq_len=2048, heads=2))
    kinds = longformer.half_kinds(128, 64, CPU).numpy()
    assert {1} <= set((kinds & 3).tolist()) and 0 in set((kinds >> 2).tolist())


def test_run_time_layouts_and_odd_tiles_have_none() -> None:
    spec = {"name": "documents", "causal": True, "pattern": {"document": {}}}
    pattern = maskc.compile(maskc.Spec.model_validate(spec), seq_len=256)
    assert plan_for(pattern).half_kinds(128, 64, CPU) is None
    window = {"name": "w", "causal": True, "pattern": {"window": {"before": 31, "after": 0}}}
    assert plan_for(maskc.compile(maskc.Spec.model_validate(window), seq_len=256)).half_kinds(3, 16, CPU) is None
