"""maskc inside HF transformers models: tiny Llama-, Mistral- and Qwen-style models with random weights.

With a dense causal spec, attn_implementation="maskc" gives the logits of "sdpa" (float32, 1e-5
relative), the same loss gradients, and the same greedy generation; with Mistral's spec rescaled to
a small window, the logits of the model's own sliding-window attention. Nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch
from tinyhf import CONFIGS, DENSE, SMALL, transformers

import maskc
import maskc.hf
from maskc.errors import SpecError


def _pair(config, spec, **extra):
    """The same random model with attn_implementation "sdpa" and "maskc" (config.maskc_spec = spec)."""
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    config = config.__class__(**{**config.to_dict(), "maskc_spec": spec, **extra})
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="maskc").eval()
    model.load_state_dict(reference.state_dict())
    return reference, model


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("family", list(CONFIGS))
def test_dense_causal_spec_equals_sdpa(family):
    reference, model = _pair(CONFIGS[family](), DENSE)
    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _relative(model(ids).logits, reference(ids).logits) < 1e-5
    # training: loss and gradients
    model.train(), reference.train()
    losses = [m(ids, labels=ids).loss for m in (model, reference)]
    for loss in losses:
        loss.backward()
    assert abs(losses[0].item() - losses[1].item()) < 1e-5 * abs(losses[1].item())
    for (name, got), want in zip(model.named_parameters(), reference.parameters()):
        assert _relative(got.grad, want.grad) < 1e-4, name
    # greedy generation through transformers' cache
    model.eval(), reference.eval()
    prompt = ids[:1, :12]
    settings = {"max_new_tokens": 10, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(model.generate(prompt, **settings), reference.generate(prompt, **settings))


def test_mistral_window_spec_equals_sliding_window_attention():
    window = 8
    config = transformers.MistralConfig(**SMALL, sliding_window=window)
    spec = maskc.load("specs/mistral_swa.yaml").to_data()
    spec["pattern"] = {"window": {"before": window - 1, "after": 0}}
    reference, model = _pair(config, spec)
    ids = torch.randint(0, 97, (1, 50), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert _relative(model(ids).logits, reference(ids).logits) < 1e-5
        settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
        assert torch.equal(model.generate(ids[:, :20], **settings), reference.generate(ids[:, :20], **settings))


def test_catalogue_name_and_bad_specs():
    config = transformers.LlamaConfig(**SMALL)
    config.maskc_spec = "streaming_llm"
    assert maskc.hf.layer_pattern(config, 0).spec.name == "streaming-llm"
    config.maskc_spec = "specs/no_such_spec.yaml"
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="maskc")
    with pytest.raises(SpecError, match=r"'specs/no_such_spec\.yaml' is neither a spec file nor a catalogue spec"):
        model(torch.zeros(1, 4, dtype=torch.long))


SINKS = {"name": "sinks", "causal": True, "pattern": [{"sink": {"count": 2}}, {"window": {"before": 3, "after": 0}}]}


def test_position_ids_read_once_per_forward_and_honoured(monkeypatch):
    """position_ids are read back to the host once per forward (not per layer), and a prefill whose
    positions do not start at 0 still runs at its true positions (a spec with sinks tells them apart)."""
    _, model = _pair(CONFIGS["llama"](), SINKS)
    reads = []
    real = maskc.hf._offsets
    monkeypatch.setattr(maskc.hf, "_offsets", lambda *a: reads.append(a) or real(*a))
    ids = torch.randint(0, 97, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        at_zero = model(ids).logits
        assert len(reads) == 1 and model.config.num_hidden_layers > 1
        shifted = model(ids, position_ids=torch.arange(7, 27)[None]).logits
        assert len(reads) == 2
        # the reference: every layer reads its position_ids (nothing remembered, nothing guessed)
        monkeypatch.setattr(maskc.hf, "_known_offsets", lambda p, q, k: real(p, q, k))
        want = model(ids, position_ids=torch.arange(7, 27)[None]).logits
    assert torch.equal(shifted, want)
    assert _relative(shifted, at_zero) > 1e-3  # the sinks moved: the positions mattered


def test_offsets_from_position_ids() -> None:
    """One position range for the whole batch, as many positions as query rows; keys end at the last."""
    rows = torch.arange(5, 9).repeat(2, 1)
    assert maskc.hf._offsets(rows, 4, 6) == (5, 3)
    assert maskc.hf._offsets(None, 4, 4) == (None, 0)
    with pytest.raises(maskc.BackendError, match="one position range"):
        maskc.hf._offsets(torch.stack([torch.arange(5, 9), torch.arange(6, 10)]), 4, 6)
    with pytest.raises(maskc.BackendError, match="do not match 3 query rows"):
        maskc.hf._offsets(rows, 3, 6)


def test_serving_under_inference_mode():
    """Forward and greedy generation under torch.inference_mode (how servers run), as under no_grad."""
    reference, model = _pair(CONFIGS[next(iter(CONFIGS))](), DENSE)
    ids = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(3))
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    with torch.inference_mode():
        assert _relative(model(ids).logits, reference(ids).logits) < 1e-5
        assert torch.equal(model.generate(ids[:1, :10], **settings), reference.generate(ids[:1, :10], **settings))


DOCUMENT_CAUSAL = {"name": "document-causal", "causal": True, "pattern": {"document": {}}}


def _document_losses(logits: torch.Tensor, ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Each document's next-token loss, summed: no document predicts the next one's first token."""
    parts = zip(logits.split(lengths, dim=1), ids.split(lengths, dim=1), strict=True)
    return sum(torch.nn.functional.cross_entropy(x[0, :-1], t[0, 1:], reduction="sum") for x, t in parts)


def test_packed_documents_equal_each_document_alone(monkeypatch):
    """A flattened batch (position_ids restarting at 0 per document, as DataCollatorWithFlattening makes)
    under a document spec gives each document's logits and gradients as if it ran alone; the documents
    are derived once per forward, so every layer shares one tensor (and one layout)."""
    reference, model = _pair(CONFIGS["llama"](), DOCUMENT_CAUSAL, maskc_seq_len=30)
    model.train(), reference.train()
    lengths = [9, 14, 7]
    ids = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(4))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    seen = []
    real = maskc.hf.packed_documents
    monkeypatch.setattr(maskc.hf, "packed_documents", lambda *a: seen.append(a) or real(*a))
    packed = model(ids, position_ids=positions).logits
    assert len(seen) == 1 and model.config.num_hidden_layers > 1
    alone = torch.cat([reference(part).logits for part in ids.split(lengths, dim=1)], dim=1)
    assert _relative(packed, alone) < 1e-5
    _document_losses(packed, ids, lengths).backward()
    _document_losses(alone, ids, lengths).backward()
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert _relative(got.grad, want.grad) < 1e-4, name


def test_rows_packed_differently_in_one_batch():
    reference, model = _pair(CONFIGS["qwen2"](), DOCUMENT_CAUSAL, maskc_seq_len=30)
    ids = torch.randint(0, 97, (2, 30), generator=torch.Generator().manual_seed(6))
    lengths = [[9, 14, 7], [30]]
    positions = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in lengths])
    with torch.no_grad():
        packed = model(ids, position_ids=positions).logits
        for b, row in enumerate(lengths):
            alone = torch.cat([reference(part).logits for part in ids[b : b + 1].split(row, dim=1)], dim=1)
            assert _relative(packed[b : b + 1], alone) < 1e-5


def test_packed_documents_need_whole_sequences():
    """The spec's pattern is compiled for maskc_seq_len positions and resolved from all of them: shorter
    rows and decoding steps are refused, and so are packed rows under a spec without document parts."""
    _, model = _pair(CONFIGS["llama"](), DOCUMENT_CAUSAL, maskc_seq_len=30)
    ids = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), pytest.raises(maskc.BackendError, match="runs only on full-length calls"):
        model(ids[:, :29], position_ids=torch.arange(29)[None])
    pattern = maskc.hf.layer_pattern(model.config, 0)
    step = torch.zeros(1, 4, 1, 16)
    with pytest.raises(maskc.BackendError, match="has document parts: it takes whole packed sequences"):
        maskc.hf._packed_attention(step, torch.zeros(1, 2, 30, 16), torch.zeros(1, 2, 30, 16), pattern, None,
                                   torch.tensor([[29]]))  # fmt: skip
    with pytest.raises(maskc.BackendError, match="do not match 30 query rows \\(packed sequences\\? they need"):
        maskc.hf._offsets(torch.cat([torch.arange(10), torch.arange(20)])[None], 30, 30)
