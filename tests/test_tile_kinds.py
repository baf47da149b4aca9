"""maskc.tile_kinds' lemma against brute force: combining sound kinds of two masks gives sound kinds of
their union, intersection and difference, on random masks whose kinds were weakened at random (a full
or empty tile claimed partial), as a run-time layout's leaves may weaken them."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskc.tile_kinds import FULL, PARTIAL, difference, intersection, kinds_of, union

TILE = 2


def _exact_kinds(mask: np.ndarray) -> np.ndarray:
    """0 where a tile holds no pair, 2 where it holds every pair, 1 otherwise."""
    rows, cols = mask.shape[0] // TILE, mask.shape[1] // TILE
    tiles = mask.reshape(rows, TILE, cols, TILE)
    return tiles.any(axis=(1, 3)).astype(np.int8) + tiles.all(axis=(1, 3))


def _is_sound(kinds: np.ndarray, mask: np.ndarray) -> bool:
    """Every tile holding a pair is stored; every tile claimed full holds only pairs."""
    exact = _exact_kinds(mask)
    return bool(np.all((exact == 0) | (kinds >= PARTIAL)) and np.all((kinds < FULL) | (exact == FULL)))


@st.composite
def _mask_and_kinds(draw: st.DrawFn, shape: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor]:
    """A random mask (tiles often all-true or all-false) and sound kinds of it, some tiles weakened."""
    rows, cols = shape
    fill = draw(st.lists(st.sampled_from([0, 1, 2]), min_size=rows * cols, max_size=rows * cols))
    noise = draw(st.lists(st.booleans(), min_size=rows * cols * TILE * TILE, max_size=rows * cols * TILE * TILE))
    mask = np.kron(np.array(fill).reshape(rows, cols) == 2, np.ones((TILE, TILE), dtype=bool))
    mixed = np.kron(np.array(fill).reshape(rows, cols) == 1, np.ones((TILE, TILE), dtype=bool))
    mask |= mixed & np.array(noise).reshape(mask.shape)
    exact = _exact_kinds(mask)
    weaken = np.array(draw(st.lists(st.booleans(), min_size=rows * cols, max_size=rows * cols))).reshape(rows, cols)
    return mask, torch.as_tensor(np.where(weaken, PARTIAL, exact).astype(np.int8))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_union_intersection_and_difference_stay_sound(data):
    shape = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    a_mask, a = data.draw(_mask_and_kinds(shape))
    b_mask, b = data.draw(_mask_and_kinds(shape))
    assert _is_sound(union([a, b]).numpy(), a_mask | b_mask)
    assert _is_sound(intersection([a, b]).numpy(), a_mask & b_mask)
    assert _is_sound(difference(a, b).numpy(), a_mask & ~b_mask)


def test_operation_tables():
    """Each operation on every pair of kinds: a full child makes a union full, an empty one an
    intersection empty, a full subtrahend a difference empty (tiles the tables then run unmasked or
    skip); two partial children stay partial."""
    kinds = torch.tensor([0, 1, 2], dtype=torch.int8)
    a, b = kinds[:, None].expand(3, 3), kinds[None, :].expand(3, 3)
    assert union([a, b]).tolist() == [[0, 1, 2], [1, 1, 2], [2, 2, 2]]
    assert intersection([a, b]).tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 2]]
    assert difference(a, b).tolist() == [[0, 0, 0], [1, 1, 0], [2, 1, 0]]


def test_full_without_any_reads_as_partial():
    """A leaf that claims a tile full but not touched is inconsistent; the kind is partial, which is
    always sound (the tile is stored and masked)."""
    any_ = torch.tensor([False, True, True, False])
    full = torch.tensor([False, False, True, True])
    assert kinds_of(any_, full).tolist() == [0, 1, 2, 1]
