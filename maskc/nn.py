"""`maskc.nn.SparseAttention`: a torch module bound to a spec, for use inside any model.

It holds no weights: projections stay the model's. Training and prefill call `maskc.attention`
(any backend, differentiable); generation passes a `maskc.KVCache` made by `new_cache`, which
keeps only the keys the spec says future queries read.

`ClusterCentroids` holds k-means centroids between calls (Routing Transformer): given to a
`SparseAttention` over a `cluster: {method: kmeans}` spec, each call assigns q and k to its
centroids instead of fitting them per call, and training calls move them by an exponential
moving average.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maskc.attention import attention
from maskc.compiler import as_spec, compile
from maskc.errors import BackendError
from maskc.ir import CompiledPattern
from maskc.kvcache import KVCache
from maskc.padding import PaddedBatch, padded_attention, store_prompt
from maskc.spec import Spec


class ClusterCentroids(torch.nn.Module):
    """k-means centroids per query head, (heads, clusters, head_dim) unit vectors, kept between calls.

    They start as seeded random unit vectors. `update(q, k)` moves each by an exponential moving
    average toward the vectors assigned to it (Routing Transformer): with x̂ the unit vectors of the
    call's queries and keys of head h (keys of the head's key/value head), assigned to the centroid
    of largest cosine, and m_c the mean of the x̂ assigned to centroid c over the batch,

        c ← normalise(decay · c + (1 − decay) · m_c)

    A centroid with nothing assigned stays where it is. The update is not differentiated.
    """

    centroids: torch.Tensor

    def __init__(self, heads: int, clusters: int, head_dim: int, *, decay: float = 0.999, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise BackendError(f"decay must lie in [0, 1); got {decay!r}")
        if min(heads, clusters, head_dim) < 1:
            raise BackendError(f"heads, clusters and head_dim must be at least 1; got {heads}, {clusters}, {head_dim}")
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(heads, clusters, head_dim, generator=generator)
        self.register_buffer("centroids", torch.nn.functional.normalize(start, dim=-1))
        self.decay = decay

    @torch.no_grad()
    def update(self, q: torch.Tensor, k: torch.Tensor) -> None:
        """One moving-average step from q (B, H, N, D) and k (B, Hkv, N, D) of one call."""
        heads, clusters, dim = self.centroids.shape
        if q.dim() != 4 or q.shape[1] != heads or q.shape[3] != dim or k.dim() != 4 or heads % k.shape[1]:
            raise BackendError(
                f"centroids are for {heads} heads of size {dim}; got q {tuple(q.shape)} and k {tuple(k.shape)}"
            )
        keys = k.repeat_interleave(heads // k.shape[1], dim=1)
        points = torch.nn.functional.normalize(torch.cat([q, keys], dim=2).float(), dim=-1).transpose(0, 1)
        points = points.reshape(heads, -1, dim)  # (H, B · 2N, D)
        current = self.centroids.float()
        nearest = torch.bmm(points, current.transpose(1, 2)).argmax(dim=-1)  # (H, B · 2N)
        slot = (torch.arange(heads, device=q.device)[:, None] * clusters + nearest).reshape(-1)
        sums = torch.zeros(heads * clusters, dim, device=q.device).index_add_(0, slot, points.reshape(-1, dim))
        ones = torch.ones_like(slot, dtype=torch.float32)
        counts = torch.zeros(heads * clusters, device=q.device).index_add_(0, slot, ones)
        means = (sums / counts.clamp_min(1)[:, None]).reshape(heads, clusters, dim)
        moved = torch.nn.functional.normalize(self.decay * current + (1 - self.decay) * means, dim=-1)
        assigned = (counts > 0).reshape(heads, clusters, 1)
        self.centroids.copy_(torch.where(assigned, moved, current).to(self.centroids.dtype))

    def extra_repr(self) -> str:
        heads, clusters, dim = self.centroids.shape
        return f"heads={heads}, clusters={clusters}, head_dim={dim}, decay={self.decay}"


def layer_spec(spec: Spec, layer: int) -> Spec:
    """The spec of model layer `layer` (0-based), reading the spec's schedule cyclically."""
    schedule = [entry for count, entry in spec.layer_schedule() for _ in range(count)]
    return schedule[layer % len(schedule)]


class SparseAttention(torch.nn.Module):
    """Attention of q (B, H, m, D) over k, v (B, Hkv, nk, D) under the spec's pattern for one layer.

    `seq_len` is the largest position the module will see (the pattern is compiled for it once);
    `layer` picks the layer of the spec's schedule; `heads` is needed for specs with head_patterns.
    `centroids` (a `ClusterCentroids`) replace the per-call k-means fit of the spec's cluster leaves;
    calls in training mode update them.
    """

    def __init__(
        self,
        spec: Spec | str | Path | CompiledPattern,
        seq_len: int | None = None,
        *,
        layer: int = 0,
        heads: int | None = None,
        backend: str = "auto",
        scale: float | None = None,
        centroids: ClusterCentroids | None = None,
    ) -> None:
        super().__init__()
        self.centroids = centroids
        if isinstance(spec, CompiledPattern):
            self.pattern = spec
        else:
            self.pattern = compile(layer_spec(as_spec(spec), layer), seq_len=seq_len, heads=heads)
        self.backend = backend
        self.scale = scale

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        cache: KVCache | None = None,
        q_offset: Any = None,
        k_offset: Any = 0,
        attention_mask: torch.Tensor | None = None,
        documents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention output (B, H, m, Dv).

        Without a cache, queries and keys sit where `maskc.attention` puts them (q_offset, k_offset).
        With a cache, k and v are the new tokens' keys and values: they are appended, then the queries
        of those tokens attend every key the cache holds. An empty cache takes a whole prompt (the
        prompt attends its own keys, then the cache keeps what decoding reads); later steps hold at
        most the cache's step_tokens tokens.

        `attention_mask` (B, nk) of 1 (token) and 0 (padding) makes a padded batch (`maskc.padding`):
        each sequence's positions count from its first token, padding is never attended and its
        output rows are zeros; the queries are the last m columns. With a cache it goes with the
        prompt only (an empty cache keeps each sequence's own tokens); later steps are all real tokens.

        `documents` (B, N) are the packed documents' ids of the call (`maskc.attention`), for patterns
        with `document` parts; full-length calls without a cache or a mask. Give every layer the same
        tensor: its layout is then built once per step (the Triton backend).
        """
        if documents is not None and (cache is not None or attention_mask is not None):
            raise BackendError(
                "documents go with a full-length call: give no cache or attention_mask with them "
                "(a pattern decided by documents takes the whole packed sequence at once)"
            )
        if attention_mask is not None:
            return self._padded(q, k, v, attention_mask, cache, q_offset, k_offset)
        if cache is None:
            fixed = None if self.centroids is None else self.centroids.centroids
            out = attention(
                q,
                k,
                v,
                self.pattern,
                self.backend,
                scale=self.scale,
                centroids=fixed,
                q_offset=q_offset,
                k_offset=k_offset,
                documents=documents,
            )
            if self.centroids is not None and self.training:
                self.centroids.update(q, k)
            return out
        if cache.pattern is not self.pattern:
            raise BackendError("the cache belongs to another pattern; make it with this module's new_cache")
        if q.shape[2] != k.shape[2]:
            raise BackendError(f"with a cache, q and k hold the same new tokens; got {q.shape[2]} and {k.shape[2]}")
        if q.shape[2] > cache.step_tokens:
            if int(cache.lengths.max()) > 0:
                raise BackendError(
                    f"{q.shape[2]} new tokens exceed the cache's step_tokens={cache.step_tokens}; a longer prompt "
                    "goes into an empty cache, later steps take at most step_tokens tokens"
                )
            out = attention(q, k, v, self.pattern, self.backend, scale=self.scale)
            cache.append(k, v)
            return out
        cache.append(k, v)
        return cache.attention(q, scale=self.scale, backend=self.backend)

    def _padded(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: KVCache | None,
        q_offset: Any,
        k_offset: Any,
    ) -> torch.Tensor:
        """A padded batch: `padded_attention`, and with an empty cache the prompt's tokens stored per sequence."""
        if q_offset is not None or not (isinstance(k_offset, int) and k_offset == 0):
            raise BackendError("attention_mask sets each sequence's positions; give no q_offset or k_offset with it")
        if self.centroids is not None:
            raise BackendError("padded batches with held cluster centroids are not supported")
        if tuple(attention_mask.shape) != (k.shape[0], k.shape[2]):
            raise BackendError(
                f"attention_mask must be (batch, keys) = {(k.shape[0], k.shape[2])}; got {tuple(attention_mask.shape)}"
            )
        batch = PaddedBatch.from_mask(attention_mask)
        if cache is not None and (cache.pattern is not self.pattern or int(cache.lengths.max()) > 0):
            raise BackendError(
                "with a cache, attention_mask goes with the prompt into an empty cache of this module's "
                "pattern (new_cache); later steps are real tokens and take no mask"
            )
        if cache is not None and q.shape[2] != k.shape[2]:
            raise BackendError(f"with a cache, q and k hold the same new tokens; got {q.shape[2]} and {k.shape[2]}")
        out = padded_attention(
            q, k, v, self.pattern, batch, q_start=k.shape[2] - q.shape[2], scale=self.scale, backend=self.backend
        )
        if cache is not None:
            store_prompt(cache, batch, k, v)
        return out

    def new_cache(self, batch: int, kv_heads: int, head_dim: int, **options: Any) -> KVCache:
        """An empty cache for this layer, sized by the pattern's retention (options: KVCache's)."""
        return KVCache(self.pattern, batch, kv_heads, head_dim, **options)

    def extra_repr(self) -> str:
        return f"pattern={self.pattern.spec.name!r}, n={self.pattern.n}, backend={self.backend!r}"
