"""Tiny HF transformers models for the integration tests: configs with random weights, nothing downloaded.

Importing this module registers attn_implementation="maskc" (after importing Triton as its
interpreter needs, since transformers imports it too); test modules skip when transformers is absent.
"""

from __future__ import annotations

import pytest
from interpreter import import_triton_for_the_interpreter

import_triton_for_the_interpreter()
transformers = pytest.importorskip("transformers")
import maskc.hf  # noqa: E402

maskc.hf.register()

DENSE = {"name": "dense-causal", "causal": True, "pattern": {"dense": {}}}
SMALL = {
    "vocab_size": 97,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
#: Llama-, Mistral- (no sliding window unless given) and Qwen-style configs of SMALL's size.
CONFIGS = {
    "llama": lambda **extra: transformers.LlamaConfig(**SMALL, **extra),
    "mistral": lambda **extra: transformers.MistralConfig(**{"sliding_window": None, **SMALL, **extra}),
    "qwen2": lambda **extra: transformers.Qwen2Config(**SMALL, **extra),
}
