"""Whether a call runs under a tracer or inside a CUDA graph capture: when what it makes must not be
kept for later calls.

Tracers (make_fx, FakeTensorMode, torch.export's proxy modes) hand fake or proxy tensors through
torch ops, so what a call would keep for later calls (constants made once) must be made afresh
under them. A mode that only watches (`observer = True`, such as an op counter) sees a call run as
it would without it. Inside a capture, kernels are recorded, not run: a tensor made there holds
nothing until the graph replays, so an eager call reading it first would read garbage.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack


def tracing_mode() -> bool:
    """Whether a dispatch mode other than an observer (a mode with `observer = True`) is active."""
    if torch._C._len_torch_dispatch_stack() == 0:
        return False
    return not all(getattr(mode, "observer", False) for mode in _get_current_dispatch_mode_stack())


def made_once(
    store: dict,
    key: Hashable,
    make: Callable[[], torch.Tensor],
    keep: Callable[[torch.Tensor], bool] = lambda made: True,
) -> torch.Tensor:
    """`store[key]`, else `make()`, kept there unless it was made inside a CUDA graph capture (it holds
    nothing until a replay) or `keep` refuses it: a device constant made once, for later calls."""
    found = store.get(key)
    if found is None:
        found = make()
        if not capturing(found.device) and keep(found):
            store[key] = found
    return found


def capturing(device: torch.device) -> bool:
    """Whether work on `device` is being captured into a CUDA graph now: its current stream is
    capturing (see the module docstring)."""
    if device.type != "cuda":
        return False
    if device.index is None or device.index == torch.cuda.current_device():
        return torch.cuda.is_current_stream_capturing()
    with torch.cuda.device(device):
        return torch.cuda.is_current_stream_capturing()
