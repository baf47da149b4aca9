"""What every backend checks about a call, the same way: shapes, the pattern, the scale, run-time parts.

Backends check devices and dtypes themselves (what they can run differs); everything here is
shared, so that all backends reject the same calls with the same words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from maskc.errors import BackendError
from maskc.ir import CompiledPattern


@dataclass(frozen=True)
class CallShape:
    """The sizes of one attention call, checked against each other and the pattern."""

    batch: int
    heads: int
    kv_heads: int
    n: int
    head_dim: int
    value_dim: int
    #: Query rows; equals n except in rectangular calls (n is then the key rows).
    q_len: int = -1

    def __post_init__(self) -> None:
        if self.q_len < 0:
            object.__setattr__(self, "q_len", self.n)

    @property
    def group(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.heads // self.kv_heads


def check_shapes(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: CompiledPattern, rectangular: bool = False
) -> CallShape:
    """The call's sizes, on any device; BackendError naming the first thing that does not fit.

    A rectangular call (maskc.offsets) may have fewer query or key rows than the pattern's n; its
    positions are checked by `resolve_offsets`.
    """
    if not q.dtype == k.dtype == v.dtype:
        raise BackendError(f"q, k and v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise BackendError(f"{name} must be 4-D (batch, heads, seq_len, head_dim); got shape {tuple(x.shape)}")
    (b, h, n, d), (bk, hk, nk, dk), (bv, hv, nv, dv) = q.shape, k.shape, v.shape
    if not b == bk == bv:
        raise BackendError(f"batch sizes differ: q {b}, k {bk}, v {bv}")
    if nk != nv:
        raise BackendError(f"k and v must have the same number of rows; got k {nk}, v {nv}")
    if not rectangular and n != nk:
        raise BackendError(f"sequence lengths differ: q {n}, k {nk}, v {nv}")
    if d != dk:
        raise BackendError(f"q and k must share head_dim; got q {d}, k {dk}")
    if hk != hv:
        raise BackendError(f"k and v must have the same number of heads; got k {hk}, v {hv}")
    if n < 1:
        raise BackendError(f"q, k and v have seq_len {n}: attention needs at least one position")
    if min(h, hk, d) < 1:
        raise BackendError(f"heads and head_dim must be at least 1; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    if h % hk:
        raise BackendError(f"q has {h} heads, not a multiple of the {hk} key/value heads (grouped-query attention)")
    shape = CallShape(batch=b, heads=h, kv_heads=hk, n=nk, head_dim=d, value_dim=dv, q_len=n)
    check_pattern(pattern, shape, rectangular)
    return shape


def check_pattern(pattern: CompiledPattern, shape: CallShape, rectangular: bool = False) -> None:
    """The pattern must be compiled for the call's n, and for its head count unless it is one static,
    shared pattern (a dynamic one clusters the q and k of each head, so it needs every head)."""
    if rectangular and pattern.dynamic:
        raise BackendError(
            f"pattern {pattern.spec.name!r} has a part decided at run time (cluster), resolved from all n "
            "queries and keys; it runs only on full-length calls (no q_offset or k_offset, q and k of seq_len rows)"
        )
    if not rectangular and pattern.n != shape.n:
        raise BackendError(
            f"pattern {pattern.spec.name!r} is compiled for seq_len {pattern.n}, "
            f"but the inputs have seq_len {shape.n}; compile it with seq_len={shape.n}"
        )
    if pattern.heads != shape.heads and (pattern.heads != 1 or pattern.per_head or pattern.dynamic):
        if pattern.spec.head_patterns:
            advice = f"its spec's head_patterns are for {pattern.heads} heads, so q needs {pattern.heads} heads"
        else:
            advice = f"compile it with heads={shape.heads}"
        raise BackendError(
            f"pattern {pattern.spec.name!r} is compiled for {pattern.heads} heads, but q has {shape.heads}; {advice}"
        )


def resolve_scale(scale: Any, head_dim: int) -> float:
    """The score scale: 1/sqrt(head_dim) by default; otherwise a finite real number."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise BackendError(f"scale must be a real number, got {scale!r}")
    if not math.isfinite(scale):
        raise BackendError(f"scale must be finite, got {scale!r}")
    return float(scale)


def static_patterns(
    pattern: CompiledPattern, q: torch.Tensor, k: torch.Tensor, shape: CallShape
) -> list[CompiledPattern]:
    """[pattern] when it is static; otherwise its resolution for each batch element, checked like the pattern."""
    from maskc.clustering import resolve_dynamic

    if not pattern.dynamic:
        return [pattern]
    with torch.no_grad():
        resolved = list(resolve_dynamic(pattern, q.detach(), k.detach()))
    if len(resolved) != shape.batch:
        raise BackendError(
            f"resolving pattern {pattern.spec.name!r} gave {len(resolved)} patterns for a batch of {shape.batch}"
        )
    for b, each in enumerate(resolved):
        if each.dynamic:
            raise BackendError(f"resolving pattern {pattern.spec.name!r} left batch element {b} dynamic")
        check_pattern(each, shape)
    return resolved
