"""What the CPU backend accepts, and the errors that say what is wrong with a call."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from maskc.calls import CallShape, check_shapes
from maskc.errors import BackendError
from maskc.ir import CompiledPattern

#: Input dtypes the backend takes. float64 is computed in float64 (the reference); the others
#: in float32, with the output (and gradients) cast back to the input dtype.
INPUT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every narrower float is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def unsupported_reason(q: Any, k: Any, v: Any, pattern: Any) -> str | None:
    """Why this backend cannot run the call (tensor kind, device, dtype, pattern type), or None."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            return f"{name} is a {type(x).__name__}, not a torch tensor"
        if x.device.type != "cpu":
            return f"{name} is on {x.device}; the cpu backend takes CPU tensors"
        if x.dtype not in INPUT_DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in INPUT_DTYPES)
            return f"{name} has dtype {str(x.dtype).removeprefix('torch.')}; the cpu backend takes {names}"
    if not isinstance(pattern, CompiledPattern):
        return f"pattern is a {type(pattern).__name__}, not a CompiledPattern (use maskc.compile)"
    return None


def check_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Any, rectangular: bool = False) -> CallShape:
    """The call's sizes; BackendError naming the first thing that does not fit."""
    reason = unsupported_reason(q, k, v, pattern)
    if reason is not None:
        raise BackendError(reason)
    return check_shapes(q, k, v, pattern, rectangular)


def head_layouts(pattern: CompiledPattern, heads: int) -> np.ndarray:
    """Layout index of each query head: the pattern's own map, or its one layout for every head."""
    if pattern.heads == heads:
        return np.asarray(pattern.head_layout)
    return np.zeros(heads, dtype=np.int32)
