"""What the Triton backend accepts, and the call's sizes checked against the pattern.

CUDA tensors in float16, bfloat16 or float32 (CPU tensors only under TRITON_INTERPRET=1, which
runs the same kernels in Triton's interpreter), head dims up to `MAX_HEAD_DIM`. Shape checks are
shared by all backends (maskc.calls).
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any

import torch

from maskc.ir import CompiledPattern

from .cache import interpreting

DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: Looked up once: torch.compile does not trace importlib, and the answer does not change.
TRITON_INSTALLED = find_spec("triton") is not None
#: Largest head dim (q/k or v) a program keeps in registers; smaller ones are padded to a power of two.
MAX_HEAD_DIM = 256


def unsupported_reason(q: Any, k: Any, v: Any, pattern: Any) -> str | None:
    """Why this backend cannot run the call (tensor kind, device, dtype, head dim), or None."""
    if not TRITON_INSTALLED:
        return "triton is not installed"
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            return f"{name} is a {type(x).__name__}, not a torch tensor"
        if x.device.type == "cpu" and not interpreting():
            return f"{name} is a CPU tensor; the triton backend runs CUDA tensors (CPU ones under TRITON_INTERPRET=1)"
        if x.device.type not in ("cuda", "cpu"):
            return f"{name} is on {x.device}; the triton backend runs CUDA tensors"
        if x.dtype not in DTYPES:
            names = ", ".join(str(d).removeprefix("torch.") for d in DTYPES)
            return f"{name} has dtype {str(x.dtype).removeprefix('torch.')}; the triton backend takes {names}"
        if x.dim() == 4 and x.shape[-1] > MAX_HEAD_DIM:
            return f"{name} has head dim {x.shape[-1]}; the triton backend takes at most {MAX_HEAD_DIM}"
    if not isinstance(pattern, CompiledPattern):
        return f"pattern is a {type(pattern).__name__}, not a CompiledPattern (use maskc.compile)"
    return None
