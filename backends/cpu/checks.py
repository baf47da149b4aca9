"""What the CPU backend accepts, and the errors that say what is wrong with a call."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from maskc.errors import BackendError
from maskc.ir import CompiledPattern

#: Input dtypes the backend takes. float64 is computed in float64 (the reference); the others
#: in float32, with the output (and gradients) cast back to the input dtype.
INPUT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class CallShape:
    """The sizes of one attention call, checked against each other and the pattern."""

    batch: int
    heads: int
    kv_heads: int
    n: int
    head_dim: int
    value_dim: int

    @property
    def group(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.heads // self.kv_heads


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


def check_call(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Any) -> CallShape:
    """The call's sizes; BackendError naming the first thing that does not fit."""
    reason = unsupported_reason(q, k, v, pattern)
    if reason is not None:
        raise BackendError(reason)
    if not q.dtype == k.dtype == v.dtype:
        raise BackendError(f"q, k and v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise BackendError(f"{name} must be 4-D (batch, heads, seq_len, head_dim); got shape {tuple(x.shape)}")
    (b, h, n, d), (bk, hk, nk, dk), (bv, hv, nv, dv) = q.shape, k.shape, v.shape
    if not b == bk == bv:
        raise BackendError(f"batch sizes differ: q {b}, k {bk}, v {bv}")
    if not n == nk == nv:
        raise BackendError(f"sequence lengths differ: q {n}, k {nk}, v {nv}")
    if d != dk:
        raise BackendError(f"q and k must share head_dim; got q {d}, k {dk}")
    if hk != hv:
        raise BackendError(f"k and v must have the same number of heads; got k {hk}, v {hv}")
    if min(h, hk, d) < 1:
        raise BackendError(f"heads and head_dim must be at least 1; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    if h % hk:
        raise BackendError(f"q has {h} heads, not a multiple of the {hk} key/value heads (grouped-query attention)")
    shape = CallShape(batch=b, heads=h, kv_heads=hk, n=n, head_dim=d, value_dim=dv)
    check_pattern(pattern, shape)
    return shape


def check_pattern(pattern: CompiledPattern, shape: CallShape) -> None:
    """The pattern must be compiled for the call's n, and for its head count unless it is one static,
    shared pattern (a dynamic one clusters the q and k of each head, so it needs every head)."""
    if pattern.n != shape.n:
        raise BackendError(
            f"pattern {pattern.spec.name!r} is compiled for seq_len {pattern.n}, "
            f"but the inputs have seq_len {shape.n}; compile it with seq_len={shape.n}"
        )
    if pattern.heads != shape.heads and (pattern.heads != 1 or pattern.per_head or pattern.dynamic):
        raise BackendError(
            f"pattern {pattern.spec.name!r} is compiled for {pattern.heads} heads, but q has {shape.heads}; "
            f"compile it with heads={shape.heads}"
        )


def head_layouts(pattern: CompiledPattern, heads: int) -> np.ndarray:
    """Layout index of each query head: the pattern's own map, or its one layout for every head."""
    if pattern.heads == heads:
        return np.asarray(pattern.head_layout)
    return np.zeros(heads, dtype=np.int32)


def resolve_scale(scale: Any, head_dim: int) -> float:
    """The score scale: 1/sqrt(head_dim) by default; otherwise a finite real number."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise BackendError(f"scale must be a real number, got {scale!r}")
    if not math.isfinite(scale):
        raise BackendError(f"scale must be finite, got {scale!r}")
    return float(scale)
