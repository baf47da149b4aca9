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


def _partial_tiles(plan, walk: str, block_m: int, block_n: int) -> list[tuple[int, int, int]]:
    """(layout, line, crossing tile) of every partial tile of `walk`, in the tables' order."""
    tables = plan.tables(walk, block_m, block_n, CPU)
    pointers, crossing, lines = tables.partial_ptr.numpy(), tables.partial_idx.numpy(), tables.lines
    found = []
    for layout in range(len(pointers) // (lines + 1)):
        for line in range(lines):
            at = layout * (lines + 1) + line
            found += [(layout, line, int(c)) for c in crossing[pointers[at] : pointers[at + 1]]]
    return found


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=spec_dicts(max_n=120),
    walk=st.sampled_from(["rows", "columns"]),
    half=st.sampled_from([4, 8, 16]),
    other=st.sampled_from([8, 16, 32]),
)
def test_half_kinds_are_sound(case: tuple[dict, int], walk: str, half: int, other: int) -> None:
    """A half said empty holds no active pair, a half said full only active ones (of those inside the
    grid); the codes follow the walk's partial tiles one for one. Rows: halves of a tile's rows;
    columns: halves of its keys."""
    data, n = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        pattern = maskc.compile(maskc.Spec.model_validate(data), seq_len=n)
    plan = plan_for(pattern)
    block_m, block_n = (2 * half, other) if walk == "rows" else (other, 2 * half)
    codes = plan.half_kinds(walk, block_m, block_n, CPU).numpy()
    tiles = _partial_tiles(plan, walk, block_m, block_n)
    assert len(codes) == max(1, len(tiles))  # padded to one entry when there is none, as the tables are
    mask = brute_force_mask(data, n)
    heads = np.asarray(pattern.head_layout)
    for (layout, line, crossing), code in zip(tiles, codes, strict=False):
        head_mask = mask[int(np.flatnonzero(heads == layout)[0])] if mask.ndim == 3 else mask
        across = slice(crossing * other, (crossing + 1) * other)
        for side, kind in enumerate((int(code) & 3, int(code) >> 2)):
            along = slice((2 * line + side) * half, (2 * line + side + 1) * half)
            block = head_mask[along, across] if walk == "rows" else head_mask[across, along]
            if kind == 0:
                assert not block.any(), (layout, line, crossing, side)
            elif kind == 2:  # every pair inside the grid (the kernels that read them run whole tiles only)
                assert block.all(), (layout, line, crossing, side)


def test_bigbird_partial_tiles_are_half_full_half_empty() -> None:
    """BigBird's blocks are 64 wide, so at 128 × 64 (and, walking the columns, at 64 × 128) every partial
    tile has one full and one empty half (the case the kinds serve: bench/NOTES.md); Longformer's band
    gives partial halves too."""
    pattern = maskc.compile("specs/bigbird.yaml", seq_len=2048, heads=2)
    plan = plan_for(pattern)
    for walk, tile in (("rows", (128, 64)), ("columns", (64, 128))):
        codes = plan.half_kinds(walk, *tile, CPU).numpy()
        assert len(codes) > 0 and set(codes.tolist()) <= {2, 8}  # full first half, empty second; or the reverse
    longformer = plan_for(maskc.compile("specs/longformer.yaml", seq_len=2048, heads=2))
    kinds = longformer.half_kinds("rows", 128, 64, CPU).numpy()
    assert {1} <= set((kinds & 3).tolist()) and 0 in set((kinds >> 2).tolist())


def test_a_half_past_the_grid_is_empty() -> None:
    """At n = 100 the last 32-key tile of the columns walk (keys 96 to 127) halves into keys 96 to 111
    and 112 to 127, which lie past every key: that half is empty, not another tile's kind."""
    spec = {"name": "w", "causal": False, "pattern": {"window": {"before": 1000, "after": 10}}}
    plan = plan_for(maskc.compile(maskc.Spec.model_validate(spec), seq_len=100))
    tiles = _partial_tiles(plan, "columns", 16, 32)
    codes = plan.half_kinds("columns", 16, 32, CPU).numpy()
    last = [int(code) >> 2 for (_, line, _), code in zip(tiles, codes, strict=True) if line == 3]
    assert last and set(last) == {0}


def test_run_time_layouts_and_odd_tiles_have_none() -> None:
    spec = {"name": "documents", "causal": True, "pattern": {"document": {}}}
    pattern = maskc.compile(maskc.Spec.model_validate(spec), seq_len=256)
    assert plan_for(pattern).half_kinds("rows", 128, 64, CPU) is None
    window = {"name": "w", "causal": True, "pattern": {"window": {"before": 31, "after": 0}}}
    plan = plan_for(maskc.compile(maskc.Spec.model_validate(window), seq_len=256))
    assert plan.half_kinds("rows", 3, 16, CPU) is None and plan.half_kinds("columns", 16, 3, CPU) is None
