"""Choosing an exact engine for a layer stack and running the search for min_layers and a counterexample.

Both engines compute the same exact reach sets; they differ in cost. The interval engine
(O(n) per layer, or O(1) without hubs) applies when every layer is local plus a few hub tokens;
the bit-parallel engine applies to everything else. If the interval model turns out not to fit
partway (too many distinct hub entry patterns), the search restarts on the bit-parallel engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskc.reach.bitsets import BitModel, BitSearch
from maskc.reach.intervals import IntervalSearch, NotIntervalShapedError, build_interval_model
from maskc.reach.product import GridModel, GridSearch, NotProductShapedError
from maskc.reach.stack import LayerStack
from maskc.reach.walk import Progress, walk


@dataclass(frozen=True)
class Outcome:
    """What a search found."""

    #: The smallest layer count at which every pair reaches, None for never.
    min_layers: int | None
    #: When not every pair reaches within the asked layers: (layers, source j, j's reach set).
    shortfall: tuple[int, int, np.ndarray] | None


class IntervalEngine:
    """Local patterns with a few hub tokens (see maskc.reach.intervals)."""

    def __init__(self, stack: LayerStack) -> None:
        self.stack = stack
        self.model = build_interval_model(stack)
        hubs = len(self.model.hubs)
        self.method = f"interval proof, {hubs} hub token{'s' if hubs != 1 else ''}"

    def image(self, reached: np.ndarray, pattern: int) -> np.ndarray:
        return self.model.image(reached, pattern)

    def search(self, layers: int, progress: Progress | None) -> Outcome:
        state = IntervalSearch(self.model, self.stack)
        done = walk(self.stack, state, layers, progress)
        return Outcome(done, state.recorded)


class BitEngine:
    """Any static pattern, 64 sources per word (see maskc.reach.bitsets)."""

    def __init__(self, stack: LayerStack, reason: str) -> None:
        self.stack = stack
        self.model = BitModel(stack)
        self.method = f"bit-parallel search ({reason})"

    def image(self, reached: np.ndarray, pattern: int) -> np.ndarray:
        return self.model.image(reached, pattern)

    def search(self, layers: int, progress: Progress | None) -> Outcome:
        """Chunk by chunk of sources; min_layers is the largest chunk's, never as soon as one is stuck."""
        worst, shortfall = 0, None
        chunks = self.model.chunks()
        for index, (lo, hi) in enumerate(chunks):
            state = BitSearch(self.model, lo, hi)
            label = f"sources {lo}…{hi - 1} of {self.stack.n} (chunk {index + 1}/{len(chunks)}), "
            done = walk(self.stack, state, layers, progress, label)
            shortfall = shortfall or state.recorded
            if done is None:
                return Outcome(None, shortfall)
            worst = max(worst, done)
        return Outcome(worst, shortfall)


class GridEngine:
    """Neighbourhood and sliding-tile patterns on a grid, axis by axis (see maskc.reach.product)."""

    def __init__(self, stack: LayerStack) -> None:
        self.stack = stack
        self.model = GridModel.build(stack)
        shape = "x".join(map(str, self.model.canvas.shape))
        self.method = f"grid product proof, one reach matrix per axis of the {shape} grid"

    def image(self, reached: np.ndarray, pattern: int) -> np.ndarray:
        return self.model.image(reached, pattern)

    def search(self, layers: int, progress: Progress | None) -> Outcome:
        state = GridSearch(self.model)
        done = walk(self.stack, state, layers, progress)
        return Outcome(done, state.recorded)


Engine = GridEngine | IntervalEngine | BitEngine


def choose_engine(stack: LayerStack) -> Engine:
    if stack.document_bounds is not None:
        return BitEngine(stack, "reach is checked inside each document")
    try:
        return GridEngine(stack)
    except NotProductShapedError:
        pass
    try:
        return IntervalEngine(stack)
    except NotIntervalShapedError as why:
        return BitEngine(stack, str(why))


def search(stack: LayerStack, layers: int, progress: Progress | None = None) -> tuple[Engine, Outcome]:
    """The engine used and what it found for `layers` layers."""
    if progress is not None:
        progress(f"preparing {len(stack.patterns)} layer pattern(s) at n = {stack.n}")
    engine = choose_engine(stack)
    try:
        return engine, engine.search(layers, progress)
    except NotIntervalShapedError as why:
        engine = BitEngine(stack, str(why))
        return engine, engine.search(layers, progress)
