"""Walking a reach state through the layer schedule until it is complete or provably stuck.

Reach only grows (every layer keeps what a token had), so two facts make the walk finite and
its answers exact:

- A layer that changes nothing leaves a state that the same pattern cannot change either, so
  the rest of that run of identical layers is skipped.
- A whole cycle of the schedule that changes nothing repeats forever: the state is stuck, and
  "never" is the exact answer. A finite state that only grows must get stuck or complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from maskc.reach.stack import LayerStack

#: progress(message): where a long search stands; the CLI draws it, the library stays quiet.
Progress = Callable[[str], None]


class ReachState(Protocol):
    """What walks: reach sets of some sources, advanced one layer at a time."""

    def apply(self, layer: int, pattern: int) -> bool:
        """Apply layer number `layer` (1-based) using pattern `pattern`; True when something grew."""

    def complete(self) -> bool:
        """True when every tracked source reaches every query it must."""

    def record(self, layer: int) -> None:
        """Called once, with the state as it is after `layer` layers, when it is not complete then."""


def walk(
    stack: LayerStack, state: ReachState, checkpoint: int, progress: Progress | None = None, label: str = ""
) -> int | None:
    """Apply layers 1, 2, … to `state`: the first layer count at which it is complete, or None (never).

    `state.record(checkpoint)` is called with the state after exactly `checkpoint` layers unless the
    state is complete by then.
    """
    if state.complete():
        return 0
    if checkpoint == 0:
        state.record(0)
    last_change = done = 0
    for first, count, pattern in stack.layer_runs():
        for layer in range(first, first + count):
            changed = state.apply(layer, pattern)
            done = layer
            if progress is not None:
                progress(f"{label}layer {layer}")
            if changed:
                last_change = layer
                if state.complete():
                    return layer
            if layer == checkpoint:
                state.record(layer)
            if not changed:
                end = first + count - 1
                if layer < checkpoint <= end:
                    state.record(checkpoint)
                done = end
                break
        if done - last_change >= stack.period:
            if checkpoint > done:
                state.record(checkpoint)
            return None
    raise AssertionError("unreachable: layer_runs never ends")
