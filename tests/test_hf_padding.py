"""HF transformers with padded batches and the spec-sized cache (maskc.hf_cache): tiny Llama-, Mistral- and
Qwen-style models with random weights, nothing downloaded.

Left- and right-padded batches give the logits of "sdpa" on every real token (float32, 1e-5
relative); right-padded training the same loss and gradients; a left-padded batch the same greedy
tokens. Mistral's window spec matches the model's own sliding window under padding, through
transformers' sliding cache. `maskc.hf.cache_for` keeps kv_cache_tokens positions per layer and
generates what transformers' full cache does.
"""

from __future__ import annotations

import pytest
import torch
from tinyhf import CONFIGS, DENSE, transformers

import maskc
import maskc.hf
from maskc.errors import BackendError

#: Rows of 14 columns: full, left-padded by 3 and by 9 (a batch for generation).
LEFT = torch.tensor([[1] * 14, [0] * 3 + [1] * 11, [0] * 9 + [1] * 5])
GREEDY = {"do_sample": False, "pad_token_id": 0}


def _pair(family, spec, **config):
    """The same random model with attn_implementation "sdpa" and "maskc" (config.maskc_spec = spec)."""
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(CONFIGS[family](**config), attn_implementation="sdpa")
    model = transformers.AutoModelForCausalLM.from_config(
        CONFIGS[family](**config, maskc_spec=spec), attn_implementation="maskc"
    )
    model.load_state_dict(reference.state_dict())
    return reference.eval(), model.eval()


def _ids(rows: int = 3, columns: int = 14, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 97, (rows, columns), generator=torch.Generator().manual_seed(seed))


def _relative_on(mask: torch.Tensor, got: torch.Tensor, want: torch.Tensor) -> float:
    real = mask.bool()
    return ((got[real] - want[real]).norm() / want[real].norm()).item()


def _window_spec(window: int, sinks: int = 0) -> dict:
    spec = maskc.load("specs/mistral_swa.yaml").to_data()
    spec["pattern"] = {"window": {"before": window - 1, "after": 0}}
    if sinks:
        spec["name"], spec["pattern"] = "sinks-window", [spec["pattern"], {"sink": {"count": sinks}}]
    return spec


@pytest.mark.parametrize("family", list(CONFIGS))
def test_padded_logits_equal_sdpa(family):
    reference, model = _pair(family, DENSE)
    ids = _ids()
    for mask in (LEFT, LEFT.flip(1), torch.tensor([[0, 1] + [1] * 10 + [0, 0]] * 3)):
        with torch.no_grad():
            got, want = model(ids, attention_mask=mask).logits, reference(ids, attention_mask=mask).logits
        assert _relative_on(mask, got, want) < 1e-5


@pytest.mark.parametrize("family", list(CONFIGS))
def test_right_padded_training_equals_sdpa(family):
    reference, model = _pair(family, DENSE)
    ids, mask = _ids(), LEFT.flip(1)
    labels = ids.masked_fill(mask == 0, -100)
    model.train(), reference.train()
    losses = [m(ids, attention_mask=mask, labels=labels).loss for m in (model, reference)]
    for loss in losses:
        loss.backward()
    assert abs(losses[0].item() - losses[1].item()) < 1e-5 * abs(losses[1].item())
    for (name, got), want in zip(model.named_parameters(), reference.parameters()):
        assert ((got.grad - want.grad).norm() / want.grad.norm()).item() < 1e-4, name


@pytest.mark.parametrize("family", list(CONFIGS))
def test_left_padded_generation_equals_sdpa(family):
    reference, model = _pair(family, DENSE)
    ids = _ids()
    settings = {"max_new_tokens": 8, **GREEDY}
    with torch.no_grad():
        want = reference.generate(ids, attention_mask=LEFT, **settings)
        assert torch.equal(model.generate(ids, attention_mask=LEFT, **settings), want)
        # the spec-sized cache: a dense spec keeps every position
        assert torch.equal(model.generate(ids, attention_mask=LEFT, cache=maskc.hf.cache_for(model), **settings), want)


def test_mistral_window_under_padding_equals_sliding_window_attention():
    """transformers' sliding cache (keys from a later column once past the window) and maskc's cache."""
    window = 6
    reference, model = _pair("mistral", _window_spec(window), sliding_window=window)
    ids = _ids()
    settings = {"max_new_tokens": 12, **GREEDY}
    with torch.no_grad():
        for mask in (LEFT, LEFT.flip(1)):
            got = model(ids, attention_mask=mask).logits
            assert _relative_on(mask, got, reference(ids, attention_mask=mask).logits) < 1e-5
        want = reference.generate(ids, attention_mask=LEFT, **settings)
        assert torch.equal(model.generate(ids, attention_mask=LEFT, **settings), want)
        cache = maskc.hf.cache_for(model)
        assert torch.equal(model.generate(ids, attention_mask=LEFT, cache=cache, **settings), want)
    tokens = maskc.kv_cache_tokens(maskc.Spec.model_validate(_window_spec(window)))
    assert [layer.tokens for layer in cache.layers] == tokens[:2] == [window, window]


@pytest.mark.parametrize("mask", [None, LEFT], ids=["unpadded", "left-padded"])
def test_sink_and_window_cache_keeps_kv_cache_tokens(mask):
    """Sinks + window: the spec-sized cache holds sinks + window positions per layer and generates what the
    uncached computation (transformers' full cache, every key) does, past the window many times over."""
    spec = _window_spec(5, sinks=2)
    _, model = _pair("llama", spec)
    ids = _ids(seed=3)
    settings = {"max_new_tokens": 30, **GREEDY}
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, **settings)
        cache = maskc.hf.cache_for(model)
        got = model.generate(ids, attention_mask=mask, cache=cache, **settings)
        assert torch.equal(got, want)
        # and the last step's logits, recomputed without any cache over the whole sequence
        full_mask = None if mask is None else torch.cat([mask, torch.ones(3, 30, dtype=mask.dtype)], dim=1)
        logits = model(got, attention_mask=full_mask).logits
        assert torch.equal(logits[:, 13:-1].argmax(-1), got[:, 14:])
    assert [layer.tokens for layer in cache.layers] == maskc.kv_cache_tokens(maskc.Spec.model_validate(spec))[:2]
    assert [layer.kv.k.shape[2] for layer in cache.layers] == [7, 7]  # 2 sinks + 5 recent


def test_sliding_cache_that_drops_sinks_is_refused():
    """transformers' sliding cache drops the sinks the spec reads: refused, with the way out named."""
    _, model = _pair("mistral", _window_spec(5, sinks=2), sliding_window=5)
    with pytest.raises(BackendError, match=r"the cache dropped keys the spec reads .* maskc\.hf\.cache_for"):
        model.generate(_ids(), attention_mask=LEFT, max_new_tokens=4, **GREEDY)


def test_bad_masks_and_caches():
    _, model = _pair("llama", DENSE)
    with pytest.raises(BackendError, match=r"row 0 has padding at column 3 between tokens"):
        model(_ids(1, 6), attention_mask=torch.tensor([[1, 1, 1, 0, 1, 1]]))
    reference, _ = _pair("llama", DENSE)
    with pytest.raises(BackendError, match="needs a model with attn_implementation='maskc'; this one uses 'sdpa'"):
        maskc.hf.cache_for(reference)
