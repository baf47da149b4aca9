"""One tensor remembered by identity and version, with what was learnt from its values.

Reading a device tensor's values back to the host stalls the device's queue, and building from them
costs host time. Where every call of a forward receives the same tensor (a model's layers share
`position_ids`, or `documents`), what one call learnt serves the later calls, as long as the tensor
is the same object at the same version (an in-place change moves the version, so the values are read
again; writes that bypass torch's version counter, through `.data` or from outside torch, are not
seen).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any

import torch


class LastTensor:
    """What was learnt from the last tensor read, and the `key` it was read for (e.g. a call's sizes).
    Dropped when that tensor is freed, so what was learnt lives no longer than it does."""

    def __init__(self) -> None:
        self._seen: tuple[weakref.ref, int, Hashable, Any] | None = None

    def get(self, tensor: torch.Tensor, key: Hashable = None) -> Any | None:
        """The value remembered for this very tensor, unchanged, and `key`; None when there is none
        (always for an inference-mode tensor, which has no version to tell a change by)."""
        if self._seen is None or tensor.is_inference():
            return None
        ref, version, seen_key, value = self._seen
        return value if ref() is tensor and version == tensor._version and seen_key == key else None

    def held(self) -> Any | None:
        """The value remembered, whichever tensor it is for: for a caller that holds part of the value
        itself as the proof that it is the one meant."""
        return None if self._seen is None else self._seen[3]

    def put(self, tensor: torch.Tensor, value: Any, key: Hashable = None) -> None:
        """Remember `value` for `tensor` (not for an inference-mode tensor: nothing to key it by)."""
        if not tensor.is_inference():
            self._seen = (weakref.ref(tensor, _dropper(weakref.ref(self))), tensor._version, key, value)


def _dropper(memo: weakref.ref) -> Callable[[weakref.ref], None]:
    """A weakref callback that forgets what `memo` holds when the tensor it was keyed by is freed."""

    def drop(dead: weakref.ref) -> None:
        held = memo()
        if held is not None and held._seen is not None and held._seen[0] is dead:
            held._seen = None

    return drop
