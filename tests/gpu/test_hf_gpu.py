"""maskc inside a tiny HF model on the GPU: the Triton backend runs the attention.

Packed sequences (position_ids restarting per document) under a document-causal spec give each
document's logits and loss gradients as if it ran alone through "sdpa", in float32; the documents
are derived once per forward, so the layers share one layout (`backends/triton/reuse.py`).
"""

from __future__ import annotations

import importlib

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

transformers = pytest.importorskip("transformers")

import maskc.hf  # noqa: E402

ATTENTION = importlib.import_module("maskc.attention")  # the module; `maskc.attention` is the function

maskc.hf.register()

SMALL = {
    "vocab_size": 97,
    "hidden_size": 128,
    "intermediate_size": 192,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}
DOCUMENT_CAUSAL = {"name": "document-causal", "causal": True, "pattern": {"document": {}}}
LENGTHS = [[97, 300, 3, 112], [512]]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _pair(n: int):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**SMALL)
    reference = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    packed = transformers.LlamaConfig(**SMALL, maskc_spec=DOCUMENT_CAUSAL, maskc_seq_len=n)
    model = transformers.AutoModelForCausalLM.from_config(packed, attn_implementation="maskc")
    model.load_state_dict(reference.state_dict())
    return reference.cuda().train(), model.cuda().train()


def _document_loss(logits: torch.Tensor, ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    parts = zip(logits.split(lengths, dim=1), ids.split(lengths, dim=1), strict=True)
    return sum(torch.nn.functional.cross_entropy(x[0, :-1], t[0, 1:], reduction="sum") for x, t in parts)


def test_packed_rows_equal_each_document_alone_with_triton(monkeypatch):
    n = 512
    reference, model = _pair(n)
    chosen = []
    real = ATTENTION.choose_backend
    monkeypatch.setattr(ATTENTION, "choose_backend", lambda *a: chosen.append(real(*a)) or chosen[-1])
    ids = torch.randint(0, 97, (len(LENGTHS), n), generator=torch.Generator().manual_seed(1)).cuda()
    positions = torch.stack([torch.cat([torch.arange(k) for k in row]) for row in LENGTHS]).cuda()
    packed = model(ids, position_ids=positions).logits
    alone = [
        torch.cat([reference(part).logits for part in ids[b : b + 1].split(row, dim=1)], dim=1)
        for b, row in enumerate(LENGTHS)
    ]
    for b in range(len(LENGTHS)):
        assert _relative(packed[b : b + 1], alone[b]) < 1e-4, b
    loss = sum(_document_loss(packed[b : b + 1], ids[b : b + 1], row) for b, row in enumerate(LENGTHS))
    loss_alone = sum(_document_loss(alone[b], ids[b : b + 1], row) for b, row in enumerate(LENGTHS))
    loss.backward()
    loss_alone.backward()
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert _relative(got.grad, want.grad) < 1e-3, name
    assert chosen and {backend.name for backend in chosen} == {"triton"}  # every layer, no CPU fallback
