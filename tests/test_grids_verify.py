"""Reachability on grids: the axis-by-axis engine against the bit-parallel engine and brute force."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgen import brute_force_mask, grid_primitives, grids

import maskc
from maskc.draw import layers_needed
from maskc.errors import MaskcWarning
from maskc.reach.search import BitEngine, GridEngine, choose_engine
from maskc.reach.stack import build_stack


def test_natten_128_kernel_13_reaches_the_whole_image_in_21_layers() -> None:
    """The clamped centres at the edges save one layer against an unclamped window's ⌈127 / 6⌉ = 22."""
    spec = maskc.Spec(name="natten", grid={"shape": [128, 128]}, pattern={"neighborhood": {"kernel": [13, 13]}})
    proven = maskc.verify(spec, 21)
    assert proven.reachable and proven.min_layers == 21 and "grid product" in proven.method
    refuted = maskc.verify(spec, 20)
    assert not refuted.reachable and refuted.counterexample == (16383, 0)
    path = refuted.path(16383, 0, unbounded=True)
    assert path is not None and path.layers == 21


@st.composite
def grid_stacks(draw: st.DrawFn) -> dict:
    """A grid without text and a layer schedule of one or two grid primitives."""
    grid = draw(grids(max_side=8))
    grid.pop("text", None)
    spec = {"name": "g", "grid": grid, "pattern": draw(grid_primitives(grid["shape"]))}
    if draw(st.booleans()):
        other = draw(grid_primitives(grid["shape"]))
        spec["layers"] = [{"count": draw(st.integers(1, 2))}, {"count": 1, "pattern": other}]
    return spec


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid_stacks(), st.integers(0, 6))
def test_grid_engine_matches_bit_parallel_engine_and_brute_force(spec_dict: dict, layers: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MaskcWarning)
        spec = maskc.Spec.model_validate(spec_dict)
        stack = build_stack(spec)
        engine = choose_engine(stack)
        assert isinstance(engine, GridEngine)
        bits = BitEngine(stack, "reference")
        ours, theirs = engine.search(layers, None), bits.search(layers, None)
        assert ours.min_layers == theirs.min_layers
        assert (ours.shortfall is None) == (theirs.shortfall is None)
        if ours.shortfall is not None:
            assert ours.shortfall[:2] == theirs.shortfall[:2]
            assert np.array_equal(ours.shortfall[2], theirs.shortfall[2])
        n = stack.n
        reached = np.random.default_rng(layers).random(n) < 0.1
        for pattern in range(len(stack.patterns)):
            assert np.array_equal(engine.image(reached, pattern), bits.image(reached, pattern))
        if not spec.layers and n <= 200:
            mask = brute_force_mask(spec_dict, n)
            assert np.array_equal(stack.patterns[0].layout.to_dense(), mask)
            needed = layers_needed(spec, n, 40)
            assert ours.min_layers == (None if (needed < 0).any() else int(needed.max()))
