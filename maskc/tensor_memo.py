"""One tensor (or one tuple of tensors) remembered by identity and version, with what was learnt
from its values.

Reading a device tensor's values back to the host stalls the device's queue, and building from them
costs host time. Where every call of a forward receives the same tensor (a model's layers share
`position_ids`, or `documents`), what one call learnt serves the later calls, as long as the tensor
is the same object at the same version (an in-place change moves the version, so the values are read
again; writes that bypass torch's version counter, through `.data` or from outside torch, are not
seen).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

#: One tensor, or several remembered together.
Tensors = torch.Tensor | Sequence[torch.Tensor]


class LastTensor:
    """What was learnt from the last tensor (or tuple of tensors) read, and the `key` it was read for
    (e.g. a call's sizes). Dropped when one of the tensors is freed, so what was learnt lives no
    longer than they do."""

    def __init__(self) -> None:
        self._seen: tuple[tuple[weakref.ref, ...], tuple[int, ...], Hashable, Any] | None = None

    def get(self, tensors: Tensors, key: Hashable = None) -> Any | None:
        """The value remembered for these very tensors, unchanged, and `key`; None when there is none
        (always for an inference-mode tensor, which has no version to tell a change by)."""
        seen = _as_tuple(tensors)
        if self._seen is None or not seen or _any_inference(seen):
            return None
        refs, versions, seen_key, value = self._seen
        same = len(refs) == len(seen) and all(
            ref() is tensor and version == tensor._version
            for ref, version, tensor in zip(refs, versions, seen, strict=True)
        )
        return value if same and seen_key == key else None

    def held(self) -> Any | None:
        """The value remembered, whichever tensors it is for: for a caller that holds part of the value
        itself as the proof that it is the one meant."""
        return None if self._seen is None else self._seen[3]

    def put(self, tensors: Tensors, value: Any, key: Hashable = None) -> None:
        """Remember `value` for `tensors` (not for inference-mode tensors: nothing to key them by)."""
        seen = _as_tuple(tensors)
        if seen and not _any_inference(seen):
            drop = _dropper(weakref.ref(self))
            self._seen = (tuple(weakref.ref(t, drop) for t in seen), tuple(t._version for t in seen), key, value)


def _dropper(memo: weakref.ref) -> Callable[[weakref.ref], None]:
    """A weakref callback that forgets what `memo` holds when a tensor it was keyed by is freed."""

    def drop(dead: weakref.ref) -> None:
        held = memo()
        if held is not None and held._seen is not None and any(ref is dead for ref in held._seen[0]):
            held._seen = None

    return drop


def _as_tuple(tensors: Tensors) -> tuple[torch.Tensor, ...]:
    return (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)


def _any_inference(tensors: tuple[torch.Tensor, ...]) -> bool:
    return any(t.is_inference() for t in tensors)
