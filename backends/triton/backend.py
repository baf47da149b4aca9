"""The "triton" backend object: checks a call, resolves dynamic patterns, runs the operator."""

from __future__ import annotations

from typing import Any

import torch

from maskc.calls import call_documents, check_shapes, resolve_scale, static_patterns
from maskc.clustering import check_call_centroids
from maskc.errors import BackendError
from maskc.ir import CompiledPattern
from maskc.offsets import Offsets

from .checks import unsupported_reason
from .clusters import cluster_attention, runs_in_cluster_order
from .function import decode_step, sparse_attention
from .passes import pass_attention, runs_passes
from .plans import plan_for


class TritonBackend:
    """Block-sparse flash attention generated from the IR, forward and backward, on CUDA GPUs.

    Full tiles run unmasked, partial tiles through the spec's predicate compiled to Triton.
    Run-time patterns (documents, top-k, clusters) get their tile tables per call, built on the
    device from the documents, q and k (`runtime.py`), and run in the same single launch; a pattern
    bounded by one cluster leaf runs on q, k, v sorted by cluster, as segments (`clusters.py`).
    """

    name = "triton"

    def supports(self, q: Any, k: Any, v: Any, pattern: Any) -> str | None:
        return unsupported_reason(q, k, v, pattern)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        pattern: CompiledPattern,
        *,
        scale: float | None = None,
        return_lse: bool = False,
        documents: torch.Tensor | None = None,
        offsets: Offsets | None = None,
        centroids: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        reason = unsupported_reason(q, k, v, pattern)
        if reason is not None:
            raise BackendError(reason)
        shape = check_shapes(q, k, v, pattern, rectangular=offsets is not None)
        scale = resolve_scale(scale, shape.head_dim)
        check_call_centroids(pattern, centroids, shape.heads, shape.head_dim)
        if offsets is not None:  # a rectangular call: check_shapes refused a run-time pattern
            call_documents(pattern, documents, shape, q.device)  # refuses stray documents
            out, lse = sparse_attention(q, k, v, pattern, scale, offsets=offsets)
            return (out, lse) if return_lse else out
        if pattern.dynamic:
            documents = call_documents(pattern, documents, shape, q.device)
            if runs_in_cluster_order(pattern):
                out, lse = cluster_attention(q, k, v, pattern, scale, documents, centroids)
            else:
                out, lse = sparse_attention(q, k, v, pattern, scale, documents, centroids=centroids)
            return (out, lse) if return_lse else out
        patterns = static_patterns(pattern, q, k, shape, documents)
        if len(patterns) == 1 and runs_passes(patterns[0]):
            out, lse = pass_attention(q, k, v, patterns[0], scale)
        elif len(patterns) == 1:
            out, lse = sparse_attention(q, k, v, patterns[0], scale)
        else:
            parts = [
                sparse_attention(q[b : b + 1], k[b : b + 1], v[b : b + 1], each, scale)
                for b, each in enumerate(patterns)
            ]
            out, lse = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return (out, lse) if return_lse else out

    #: (out, lse) of q over a KV cache whose slots hold the given positions (maskc.KVCache); not differentiable.
    decode = staticmethod(decode_step)

    def source(self, pattern: CompiledPattern) -> str:
        """The generated Triton module (predicate and kernels) for this pattern's rules."""
        return plan_for(pattern).source()
