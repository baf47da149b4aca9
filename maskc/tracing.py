"""Whether a call runs under a tracer: a torch dispatch mode other than a mere observer.

Tracers (make_fx, FakeTensorMode, torch.export's proxy modes) hand fake or proxy tensors through
torch ops, so what a call would keep for later calls (constants made once) must be made afresh
under them. A mode that only watches (`observer = True`, such as an op counter) sees a call run as
it would without it.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode_stack


def tracing_mode() -> bool:
    """Whether a dispatch mode other than an observer (a mode with `observer = True`) is active."""
    if torch._C._len_torch_dispatch_stack() == 0:
        return False
    return not all(getattr(mode, "observer", False) for mode in _get_current_dispatch_mode_stack())
