"""A transformers Cache sized by the spec: `maskc.hf.cache_for(model)`, one `maskc.KVCache` per layer.

transformers' own caches keep every key (or the last `config.sliding_window`), whatever the spec
says. `MaskcCache` keeps, per layer, exactly what the layer's pattern says a future query reads
(`maskc.retention`): a causal window w with k sinks holds k + w positions per sequence, a dense
layer everything. Pass it to generate: `model.generate(ids, cache=maskc.hf.cache_for(model))`.

How the work splits: a layer's `update` only counts the tokens and marks the new keys with itself
(the `CACHE_TAG` attribute); the "maskc" attention function, which knows the batch's
padding, then calls `MaskcLayer.attend`. The first call (the prompt) attends the prompt's own keys
and stores each sequence's tokens (positions counted from its first token); each later call
appends the new tokens and attends over the cache (`KVCache.attention`). It needs
attn_implementation="maskc" (no other attention function reads the mark) and steps of one token
(greedy or sampled generation; not assisted generation).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from maskc.attention import attention
from maskc.errors import BackendError
from maskc.ir import CompiledPattern
from maskc.kvcache import KVCache
from maskc.padding import store_prompt

#: The name models pass as attn_implementation.
NAME = "maskc"
#: The attribute a cache layer sets on the keys it hands the attention function (maskc.hf reads it).
CACHE_TAG = "maskc_cache_layer"


class MaskcLayer(CacheLayerMixin):
    """One layer's cache: a `maskc.KVCache` made at the prompt, sized by the layer's pattern."""

    is_sliding = False

    def __init__(self) -> None:
        super().__init__()
        self.kv: KVCache | None = None
        self.seen = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Count the new tokens and hand them, marked, to the attention function (which stores them)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.seen += key_states.shape[2]
        setattr(key_states, CACHE_TAG, self)
        return key_states, value_states

    def attend(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        pattern: CompiledPattern,
        padded: Any,
        scale: float | None,
    ) -> torch.Tensor:
        """Attention (B, H, m, Dv) of the new tokens' queries; stores their keys and values.

        `padded` is the call's `maskc.hf.PaddedCall`, or None without padding.
        The first call (the prompt) attends its own keys, then stores each row's tokens from slot 0
        (position 0 = the row's first token); later calls append and attend over the cache.
        """
        if self.kv is not None:
            if padded is not None and not bool(padded.batch.real(padded.q_start, key.shape[2]).all()):
                raise BackendError("a maskc cache takes padding only in the prompt; later tokens must all be real")
            self.kv.append(key, value)
            return self.kv.attention(query, scale=scale)
        batch, kv_heads, _, head_dim = key.shape
        self.kv = KVCache(pattern, batch, kv_heads, head_dim, value.shape[-1], dtype=key.dtype, device=key.device)
        if padded is None:
            self.kv.append(key, value)
            return attention(query, key, value, pattern, scale=scale, q_offset=0, k_offset=0)
        store_prompt(self.kv, padded.batch, key, value, padded.k_start)
        return padded.attention(query, key, value, pattern, scale)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def get_seq_length(self) -> int:
        return self.seen

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.kv, self.seen = None, 0
        self.is_initialized = False

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: keep the sequences beam_idx names, in that order."""
        if self.kv is None:
            return
        index = beam_idx.to(self.kv.k.device)
        self.kv.k, self.kv.v = self.kv.k[index], self.kv.v[index]
        self.kv.positions = self.kv.positions[index]
        self.kv.lengths = self.kv.lengths[beam_idx.cpu().numpy()]

    @property
    def tokens(self) -> int:
        """Positions the layer holds per sequence (0 before the prompt)."""
        return 0 if self.kv is None else self.kv.slots


class MaskcCache(Cache):
    """One `MaskcLayer` per layer of the model whose config this is (attn_implementation "maskc")."""

    def __init__(self, config: Any) -> None:
        config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        if getattr(config, "_attn_implementation", None) != NAME:
            raise BackendError(
                f"a maskc cache needs a model with attn_implementation={NAME!r}; this one uses "
                f"{getattr(config, '_attn_implementation', None)!r}"
            )
        super().__init__(layers=[MaskcLayer() for _ in range(config.num_hidden_layers)])
