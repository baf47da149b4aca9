"""HF transformers: `attn_implementation="maskc"` runs a model's attention under a maskc spec.

`register()` adds "maskc" to transformers' `AttentionInterface` (and a mask function to its
`AttentionMaskInterface`, so that the model builds no dense mask: the spec is the mask). The spec
comes from `config.maskc_spec`: a path to a spec file, the name of a catalogue spec
("mistral_swa"), or a dict in spec-file form. Layer L of the model uses layer L of the spec's
schedule, cycled. Each layer's pattern is compiled once for `config.maskc_seq_len` positions
(default `config.max_position_embeddings`).

Without padding, positions come from the model's `position_ids`, so prefill, training and
`generate()` (with transformers' own caches, full or sliding) evaluate the rule on true positions.
A padded batch (an attention_mask with zeros: left padding for generation, right padding for
training) runs through `maskc.padding`: each sequence's positions count from its first token, and
padding is never attended. `maskc.hf.cache_for(model)` gives generate() a cache sized by the spec
(`maskc.hf_cache`). Attention dropout is refused.

A spec with document parts takes packed sequences: a flattened batch whose position_ids restart at 0
for each document (transformers' DataCollatorWithFlattening) of `maskc_seq_len` tokens per row; the
documents are where the positions restart, derived once per forward and shared by every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from maskc.attention import attention
from maskc.catalogue import catalogue_dir
from maskc.compiler import compile
from maskc.documents import uses_documents
from maskc.errors import BackendError, SpecError
from maskc.ir import CompiledPattern
from maskc.loader import load
from maskc.nn import layer_spec
from maskc.padding import PaddedBatch, padded_attention
from maskc.spec import Spec
from maskc.tensor_memo import LastTensor

#: Compiled patterns per (config object, layer): a model compiles each layer's pattern once.
_PATTERNS: dict[tuple[int, int], tuple[Any, CompiledPattern]] = {}


def register() -> None:
    """Make attn_implementation="maskc" available to every transformers model."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from maskc.hf_cache import NAME

    AttentionInterface.register(NAME, maskc_attention_forward)
    AttentionMaskInterface.register(NAME, padding_call)


def resolve_spec(value: Any) -> Spec:
    """config.maskc_spec as a Spec: a Spec, a dict, a catalogue name, or a path to a spec file."""
    if isinstance(value, Spec):
        return value
    if isinstance(value, dict):
        try:
            return Spec.model_validate(value)
        except Exception as err:
            raise SpecError(f"config.maskc_spec: {err}") from None
    if isinstance(value, (str, Path)):
        path = Path(value)
        if path.is_file():
            return load(path)
        named = catalogue_dir() / f"{value}.yaml"
        if isinstance(value, str) and named.is_file():
            return load(named)
        names = ", ".join(sorted(p.stem for p in catalogue_dir().glob("*.yaml")))
        raise SpecError(f"config.maskc_spec {str(value)!r} is neither a spec file nor a catalogue spec ({names})")
    if value is None:
        raise SpecError("attn_implementation='maskc' needs config.maskc_spec: a spec path, a catalogue name or a dict")
    raise SpecError(f"config.maskc_spec must be a path, a catalogue name or a dict, not {type(value).__name__}")


def layer_pattern(config: Any, layer: int) -> CompiledPattern:
    """The compiled pattern of model layer `layer` under config.maskc_spec (compiled once per config)."""
    key = (id(config), layer)
    held = _PATTERNS.get(key)
    if held is not None and held[0] is config:
        return held[1]
    spec = layer_spec(resolve_spec(getattr(config, "maskc_spec", None)), layer)
    n = getattr(config, "maskc_seq_len", None) or config.max_position_embeddings
    pattern = compile(spec, seq_len=n, heads=config.num_attention_heads)
    _PATTERNS[key] = (config, pattern)
    return pattern


@dataclass(frozen=True)
class PaddedCall:
    """What the mask function hands the attention function for a padded batch: the batch's rows and
    where the call's queries and keys sit among its columns (transformers' q_offset, kv_offset)."""

    batch: PaddedBatch
    q_start: int
    k_start: int

    def attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pattern: CompiledPattern,
                  scale: float | None) -> torch.Tensor:  # fmt: skip
        return padded_attention(
            query, key, value, pattern, self.batch, q_start=self.q_start, k_start=self.k_start, scale=scale
        )


def padding_call(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: Any = 0,
    kv_offset: Any = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> PaddedCall | None:
    """transformers' mask builder for "maskc": no dense mask; a padded batch becomes a `PaddedCall`.

    transformers has turned the model's 2-D attention_mask into booleans by now (any nonzero value is
    a token, as for every implementation); a row whose tokens are not contiguous is refused.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise BackendError(f"attn_implementation='maskc' takes a 2-D attention_mask; got {attention_mask.dim()}-D")
    columns = int(kv_offset) + kv_length
    if attention_mask.shape[1] < columns:  # as transformers does: columns past the mask are padding
        attention_mask = torch.nn.functional.pad(attention_mask, (0, columns - attention_mask.shape[1]))
    batch = PaddedBatch.from_mask(attention_mask[:, :columns])
    if not batch.padded:
        return None
    return PaddedCall(batch=batch, q_start=int(q_offset), k_start=int(kv_offset))


def _offsets(position_ids: torch.Tensor | None, q_len: int, kv_len: int) -> tuple[Any, int]:
    """(q_offset, k_offset) from the queries' positions: keys are the kv_len positions ending at the last query.

    Reads position_ids back to the host (a stall of the GPU's queue); `_POSITIONS` keeps that to once
    per model forward."""
    if position_ids is None:
        return None, 0
    rows = position_ids.reshape(-1, position_ids.shape[-1])
    ends = rows[:, [0, -1]].tolist()  # one read: each row's first and last position
    first, last = [start for start, _ in ends], ends[0][1]
    if len(set(first)) > 1 or any(end != last for _, end in ends):
        raise BackendError(f"attn_implementation='maskc' needs one position range for the batch; got starts {first}")
    if last - first[0] + 1 != q_len:
        raise BackendError(
            f"position_ids {first[0]}..{last} do not match {q_len} query rows (packed sequences? they need a spec "
            "with document parts, e.g. document intersected with the pattern)"
        )
    return first[0], last + 1 - kv_len


#: The offsets of the last position_ids read: every layer of one forward receives the same tensor, so its
#: values are read back once per forward, not per layer.
_POSITIONS = LastTensor()


def _known_offsets(position_ids: torch.Tensor | None, q_len: int, kv_len: int) -> tuple[Any, int] | None:
    """The offsets without a read: those of no position_ids, or remembered for this tensor; else None."""
    if position_ids is None:
        return None, 0
    return _POSITIONS.get(position_ids, (q_len, kv_len))


def _read_offsets(position_ids: torch.Tensor, q_len: int, kv_len: int) -> tuple[Any, int]:
    offsets = _offsets(position_ids, q_len, kv_len)
    _POSITIONS.put(position_ids, offsets, (q_len, kv_len))
    return offsets


def packed_documents(position_ids: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch, N) document ids of a flattened batch (transformers' DataCollatorWithFlattening): a document
    starts wherever a position does not follow the one before (position_ids restart at each document).
    Torch ops on the device, nothing read back."""
    rows = position_ids.reshape(-1, position_ids.shape[-1]).expand(batch, -1)
    starts = torch.nn.functional.pad(rows[:, 1:] != rows[:, :-1] + 1, (1, 0))
    return starts.cumsum(dim=1)


#: The documents of the last position_ids seen: every layer of one forward receives the same tensor, so
#: they all get the same documents tensor, and a run-time layout built from it serves them all.
_DOCUMENTS = LastTensor()


def _packed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pattern: CompiledPattern,
                      scaling: float | None, position_ids: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """A spec with document parts: the call's documents are the packed sequences that position_ids
    count (each from 0), over the whole flattened batch."""
    q_len, kv_len = query.shape[2], key.shape[2]
    if position_ids is None or q_len != kv_len or position_ids.shape[-1] != q_len:
        raise BackendError(
            f"layer {pattern.spec.name!r} has document parts: it takes whole packed sequences (as many queries "
            "as keys) with position_ids that restart at 0 for each document, as transformers' "
            "DataCollatorWithFlattening makes them; not decoding steps"
        )
    size = (query.shape[0], q_len)
    documents = _DOCUMENTS.get(position_ids, size)
    if documents is None:
        documents = packed_documents(position_ids, query.shape[0])
        _DOCUMENTS.put(position_ids, documents, size)
    return attention(query, key, value, pattern, scale=scaling, documents=documents)


def _unpadded_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, pattern: CompiledPattern,
                        scaling: float | None, position_ids: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """Attention at the positions position_ids give. The first layer of a prefill (as many queries as
    keys) runs at positions 0 … m − 1 before position_ids are read, and again if they say otherwise:
    the read then waits on a busy GPU instead of stalling an idle one. A spec with document parts
    takes the documents position_ids pack instead (`_packed_attention`)."""
    if uses_documents(pattern):
        return _packed_attention(query, key, value, pattern, scaling, position_ids)
    q_len, kv_len = query.shape[2], key.shape[2]
    offsets = _known_offsets(position_ids, q_len, kv_len)
    if offsets is None and q_len == kv_len:
        out = attention(query, key, value, pattern, scale=scaling, q_offset=0, k_offset=0)
        offsets = _read_offsets(position_ids, q_len, kv_len)
        if offsets == (0, 0):
            return out
    if offsets is None:
        offsets = _read_offsets(position_ids, q_len, kv_len)
    return attention(query, key, value, pattern, scale=scaling, q_offset=offsets[0], k_offset=offsets[1])


def maskc_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention function: (B, H, m, D) queries → (B, m, H, Dv) output, no weights."""
    if dropout:
        raise BackendError(f"attn_implementation='maskc' has no attention dropout (got {dropout}); set it to 0")
    padded = attention_mask if isinstance(attention_mask, PaddedCall) else None
    if attention_mask is not None and padded is None:
        raise BackendError("attn_implementation='maskc' received a dense mask; the spec's pattern is the only mask")
    pattern = layer_pattern(module.config, module.layer_idx)
    from maskc.hf_cache import CACHE_TAG  # transformers is loaded whenever this runs

    layer = getattr(key, CACHE_TAG, None)
    if layer is not None:  # the model runs with a cache sized by the spec (maskc.hf.cache_for)
        out = layer.attend(query, key, value, pattern, padded, scaling)
    elif padded is not None:
        out = padded.attention(query, key, value, pattern, scaling)
    else:
        out = _unpadded_attention(query, key, value, pattern, scaling, kwargs.get("position_ids"))
    return out.transpose(1, 2).contiguous(), None


def cache_for(model: Any) -> Any:
    """A transformers Cache for `model.generate(..., past_key_values=cache)` that keeps, per layer, only
    the keys the spec says future queries read (see maskc.hf_cache.MaskcCache)."""
    from maskc.hf_cache import MaskcCache  # imports transformers, an optional extra

    return MaskcCache(model.config)
