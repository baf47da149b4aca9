"""`maskc.attention`: run a compiled pattern on q, k, v through a backend."""

from __future__ import annotations

from typing import Any

from maskc.ir import CompiledPattern
from maskc.registry import choose_backend


def attention(
    q: Any,
    k: Any,
    v: Any,
    pattern: CompiledPattern,
    backend: str = "auto",
    *,
    scale: float | None = None,
    return_lse: bool = False,
    documents: Any = None,
) -> Any:
    """Sparse attention softmax(q kᵀ · scale, masked by `pattern`) v.

    q: (B, H, N, D); k, v: (B, Hkv, N, D) with H divisible by Hkv (grouped-query attention).
    scale defaults to 1/sqrt(D). Rows with no key give zeros (and lse = −inf). Returns the
    output, or (output, lse) with lse of shape (B, H, N) when return_lse is true.
    backend="auto" picks the first registered backend that supports the inputs (the Triton
    backend for CUDA tensors, the CPU reference otherwise).
    documents: (B, N) integer document ids, non-decreasing along N, on q's device; required by
    patterns with `document` (or sink/global `per: document`) and refused by any other.
    """
    chosen = choose_backend(q, k, v, pattern, backend)
    if documents is None:
        return chosen.forward(q, k, v, pattern, scale=scale, return_lse=return_lse)
    return chosen.forward(q, k, v, pattern, scale=scale, return_lse=return_lse, documents=documents)
