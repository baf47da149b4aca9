"""`maskc.nn.SparseAttention`: a torch module bound to a spec, for use inside any model.

It holds no weights: projections stay the model's. Training and prefill call `maskc.attention`
(any backend, differentiable); generation passes a `maskc.KVCache` made by `new_cache`, which
keeps only the keys the spec says future queries read.
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
from maskc.spec import Spec


def layer_spec(spec: Spec, layer: int) -> Spec:
    """The spec of model layer `layer` (0-based), reading the spec's schedule cyclically."""
    schedule = [entry for count, entry in spec.layer_schedule() for _ in range(count)]
    return schedule[layer % len(schedule)]


class SparseAttention(torch.nn.Module):
    """Attention of q (B, H, m, D) over k, v (B, Hkv, nk, D) under the spec's pattern for one layer.

    `seq_len` is the largest position the module will see (the pattern is compiled for it once);
    `layer` picks the layer of the spec's schedule; `heads` is needed for specs with head_patterns.
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
    ) -> None:
        super().__init__()
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
    ) -> torch.Tensor:
        """Attention output (B, H, m, Dv).

        Without a cache, queries and keys sit where `maskc.attention` puts them (q_offset, k_offset).
        With a cache, k and v are the new tokens' keys and values: they are appended, then the queries
        of those tokens attend every key the cache holds. An empty cache takes a whole prompt (the
        prompt attends its own keys, then the cache keeps what decoding reads); later steps hold at
        most the cache's step_tokens tokens.
        """
        if cache is None:
            return attention(
                q, k, v, self.pattern, self.backend, scale=self.scale, q_offset=q_offset, k_offset=k_offset
            )
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

    def new_cache(self, batch: int, kv_heads: int, head_dim: int, **options: Any) -> KVCache:
        """An empty cache for this layer, sized by the pattern's retention (options: KVCache's)."""
        return KVCache(self.pattern, batch, kv_heads, head_dim, **options)

    def extra_repr(self) -> str:
        return f"pattern={self.pattern.spec.name!r}, n={self.pattern.n}, backend={self.backend!r}"
