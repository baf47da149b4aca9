"""The "cpu" backend object: checks a call, resolves dynamic patterns, runs the autograd Function."""

from __future__ import annotations

from typing import Any

import torch

from maskc.calls import call_documents, resolve_scale, static_patterns
from maskc.clustering import check_call_centroids
from maskc.ir import CompiledPattern
from maskc.offsets import Offsets

from .cache import PlanCache
from .checks import check_call, compute_dtype, unsupported_reason
from .decode import decode_attention
from .function import SparseAttention
from .rectangular import rectangular_job
from .work import Job, group_heads

#: Default bytes one step of the computation may hold (one chunk of query rows of one head).
MEMORY_BUDGET = 1 << 30
#: Default bytes of chunk plans kept between calls.
CACHE_BUDGET = 1 << 30


class CpuBackend:
    """Exact sparse attention on the IR's element-level CSR (scipy.sparse), forward and backward.

    float64 inputs are computed in float64 (the reference other backends are checked against);
    float32, float16 and bfloat16 in float32, returning the output and gradients in the input
    dtype and lse in float32. A static pattern compiled for one head (without head_patterns)
    serves every head; any other pattern must be compiled for q's head count. `memory_budget`
    bounds one step, down to one row tile of the layout (the unit the IR materializes elements
    in); `plans.budget` bounds the plan cache.
    """

    name = "cpu"

    def __init__(self, memory_budget: int = MEMORY_BUDGET, cache_budget: int = CACHE_BUDGET) -> None:
        self.memory_budget = memory_budget
        self.plans = PlanCache(cache_budget)

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
        # Under torch.compile the reference runs eagerly: it works on numpy and scipy arrays, which a
        # graph cannot hold, so the compiled function breaks its graph around this call. The eager
        # path never imports torch._dynamo (importing it early changes how Triton's interpreter runs).
        run = self._untraced if torch.compiler.is_compiling() else self._run
        return run(
            q,
            k,
            v,
            pattern,
            scale=scale,
            return_lse=return_lse,
            documents=documents,
            offsets=offsets,
            centroids=centroids,
        )

    def _run(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        pattern: CompiledPattern,
        *,
        scale: float | None,
        return_lse: bool,
        documents: torch.Tensor | None,
        offsets: Offsets | None,
        centroids: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        shape = check_call(q, k, v, pattern, rectangular=offsets is not None)
        check_call_centroids(pattern, centroids, shape.heads, shape.head_dim)
        if offsets is not None:  # a rectangular call: check_call refused a run-time pattern
            call_documents(pattern, documents, shape, q.device)  # refuses stray documents
            scale_value, dtype = resolve_scale(scale, shape.head_dim), compute_dtype(q.dtype)
            job = rectangular_job(pattern, shape, offsets, scale_value, dtype, self.memory_budget)
            out, lse = SparseAttention.apply(q, k, v, job)
            return (out, lse) if return_lse else out
        job = Job(
            groups=group_heads(static_patterns(pattern, q, k, shape, documents, centroids), shape),
            shape=shape,
            scale=resolve_scale(scale, shape.head_dim),
            dtype=compute_dtype(q.dtype),
            memory_budget=self.memory_budget,
            # a resolved dynamic pattern is new at every call: its plans serve this call's backward only
            plans=PlanCache(self.plans.budget) if pattern.dynamic else self.plans,
        )
        out, lse = SparseAttention.apply(q, k, v, job)
        return (out, lse) if return_lse else out

    #: Attention of q over a KV cache whose slots hold the given positions (maskc.KVCache).
    decode = staticmethod(decode_attention)

    #: `_run` hidden from torch.compile's tracer; torch._dynamo is imported on the first traced call only.
    _untraced = torch._disable_dynamo(_run)
