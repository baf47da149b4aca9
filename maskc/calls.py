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

from maskc.compiler import compile
from maskc.documents import check_documents, uses_documents
from maskc.errors import BackendError, DocumentsError
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
    shared pattern (one decided by q and k, clusters or top-k, resolves each head, so it needs every head).
    A pattern decided at run time (documents, top-k, clusters) is resolved over all n positions, so it
    needs a full-length call."""
    if rectangular and pattern.dynamic:
        raise BackendError(
            f"pattern {pattern.spec.name!r} has a part decided at run time (documents, top-k or clusters), "
            "resolved from all n positions; it runs only on full-length calls "
            "(no q_offset or k_offset, q and k of seq_len rows)"
        )
    if not rectangular and pattern.n != shape.n:
        raise BackendError(
            f"pattern {pattern.spec.name!r} is compiled for seq_len {pattern.n}, "
            f"but the inputs have seq_len {shape.n}; compile it with seq_len={shape.n}"
        )
    if pattern.heads != shape.heads and (pattern.heads != 1 or pattern.per_head or _decided_by_qk(pattern)):
        if pattern.spec.head_patterns:
            advice = f"its spec's head_patterns are for {pattern.heads} heads, so q needs {pattern.heads} heads"
        else:
            advice = f"compile it with heads={shape.heads}"
        raise BackendError(
            f"pattern {pattern.spec.name!r} is compiled for {pattern.heads} heads, but q has {shape.heads}; {advice}"
        )


def _decided_by_qk(pattern: CompiledPattern) -> bool:
    """Whether some leaf of the pattern is decided by q and k at run time (cluster, top-k)."""
    return any(
        leaf.dynamic and getattr(leaf, "decided_by", "") == "q and k"
        for layout in pattern.layouts
        for leaf in layout.rule.leaves()
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


def call_documents(pattern: CompiledPattern, documents: Any, shape: CallShape, device: torch.device) -> Any:
    """The call's documents, checked: required by a pattern with document parts, refused by any other."""
    if not uses_documents(pattern):
        if documents is not None:
            raise DocumentsError(
                f"documents were given, but pattern {pattern.spec.name!r} has no document-dependent part "
                "(document, or sink/global with per: document)"
            )
        return None
    if documents is None:
        raise DocumentsError(
            f"pattern {pattern.spec.name!r} depends on documents (document, or sink/global per document); "
            "pass documents= (batch, seq_len) document ids to the call"
        )
    return check_documents(documents, shape.batch, shape.n, device)


def static_patterns(
    pattern: CompiledPattern,
    q: torch.Tensor,
    k: torch.Tensor,
    shape: CallShape,
    documents: Any = None,
    centroids: torch.Tensor | None = None,
) -> list[CompiledPattern]:
    """[pattern] when it is static; otherwise its resolution for each batch element, checked like the pattern.

    Document leaves are resolved from `documents` (B, N) on the host, then cluster and top-k leaves
    from q and k. A pattern that needs documents without them, or documents given to a pattern that
    does not use them, is an error.
    """
    from maskc.clustering import resolve_dynamic

    per_batch = [pattern] * shape.batch
    documents = call_documents(pattern, documents, shape, q.device)
    if documents is not None:
        tile = (pattern.block_m, pattern.block_n)
        per_batch = [
            compile(pattern.spec, seq_len=pattern.n, block_size=tile, heads=pattern.heads, documents=each)
            for each in documents.detach().cpu().numpy()
        ]
    if not any(each.dynamic for each in per_batch):
        return per_batch if uses_documents(pattern) else [pattern]
    with torch.no_grad():
        resolved = [
            resolve_dynamic(each, q[b : b + 1].detach(), k[b : b + 1].detach(), centroids)[0]
            for b, each in enumerate(per_batch)
        ]
    for b, each in enumerate(resolved):
        if each.dynamic:
            raise BackendError(f"resolving pattern {pattern.spec.name!r} left batch element {b} dynamic")
        check_pattern(each, shape)
    return resolved
