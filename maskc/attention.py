"""`maskc.attention`: run a compiled pattern on q, k, v through a backend."""

from __future__ import annotations

from typing import Any

import torch

from maskc.ir import CompiledPattern
from maskc.offsets import is_full_call, resolve_offsets
from maskc.registry import choose_backend, find_backends


@torch.compiler.assume_constant_result
def _backends_found() -> bool:
    """Find the backends (imports, entry points) before choosing one. torch.compile runs this at trace
    time rather than tracing it, so a compiled model whose first call traces `attention` keeps one graph
    (importlib cannot be traced)."""
    find_backends()
    return True


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
    centroids: Any = None,
    q_offset: Any = None,
    k_offset: Any = 0,
) -> Any:
    """Sparse attention softmax(q kᵀ · scale, masked by `pattern`) v.

    q: (B, H, m, D); k, v: (B, Hkv, nk, D) with H divisible by Hkv (grouped-query attention).
    The pattern is compiled for n positions; key row b is position k_offset + b and query row a is
    position q_offset + a, with q_offset by default k_offset + nk − m (bottom-right alignment, as
    in decoding). q_offset may be a tensor of shape (B,), one start per batch element. With
    m = nk = n and no offsets this is plain attention under the pattern.
    scale defaults to 1/sqrt(D). Rows with no key give zeros (and lse = −inf). Returns the
    output, or (output, lse) with lse of shape (B, H, m) when return_lse is true.
    backend="auto" picks the first registered backend that supports the inputs (the Triton
    backend for CUDA tensors, the CPU reference otherwise).
    documents: (B, N) integer document ids, non-decreasing along N, on q's device; required by
    patterns with `document` (or sink/global `per: document`) and refused by any other. A decreasing
    id raises DocumentsError with the position; on a GPU the order is read back once per documents
    tensor (unchanged tensors are not checked again), and under CUDA graphs or torch.compile (or with
    MASKC_CHECK_DOCUMENTS=async) checked by a device-side assertion (`maskc.documents`). A pattern
    decided at run time (documents, top-k, clusters) needs a full-length call (no offsets).
    centroids: (H, clusters, D) k-means centroids that replace the per-call fit of the pattern's
    cluster leaves (all `method: kmeans` with that many clusters; `maskc.nn.ClusterCentroids` keeps them).
    """
    _backends_found()
    chosen = choose_backend(q, k, v, pattern, backend)
    extra: dict[str, Any] = {} if documents is None else {"documents": documents}
    if centroids is not None:
        extra["centroids"] = centroids
    if not _square(q, k, pattern, q_offset, k_offset):
        extra["offsets"] = resolve_offsets(q.shape[0], q.shape[2], k.shape[2], pattern.n, q_offset, k_offset)
    return chosen.forward(q, k, v, pattern, scale=scale, return_lse=return_lse, **extra)


def _square(q: Any, k: Any, pattern: CompiledPattern, q_offset: Any, k_offset: Any) -> bool:
    """Whether the call is the full-length one every backend runs (malformed shapes go there too, to be
    refused by the backend's checks)."""
    shapes = [getattr(x, "shape", ()) for x in (q, k)]
    if any(len(shape) != 4 for shape in shapes):
        return True
    return is_full_call(shapes[0][2], shapes[1][2], pattern.n, q_offset, k_offset)
