"""Prefill of a long prompt through an HF transformers model: attn_implementation "maskc" against
"sdpa" and "flex_attention", same weights, same run.

Run on a CUDA machine: python3 bench/bench_hf_prefill.py [--n 32768] [--layers 4]
A Mistral-style model (hidden 4096, 32 query / 8 KV heads, head dim 128, bf16, random weights,
nothing downloaded) with a causal sliding window of 4096: transformers' own sliding-window masks for
"sdpa" and "flex_attention", and specs/mistral_swa.yaml for "maskc" (the same mask). The median
time of one forward pass over the prompt (no cache, no gradients) per implementation, and the
largest relative difference of the last position's logits against "sdpa". Writes JSON to
$OUT/bench_hf_prefill.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import transformers
from triton.testing import do_bench

import maskc.hf

WINDOW = 4096


def build(n: int, layers: int, implementation: str, state: dict | None) -> transformers.PreTrainedModel:
    config = transformers.MistralConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=n, sliding_window=WINDOW,
        maskc_spec="mistral_swa", maskc_seq_len=n,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=implementation)
    model = model.to("cuda", torch.bfloat16).eval()
    if state is not None:
        model.load_state_dict(state)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=32768)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    maskc.hf.register()
    ids = torch.randint(0, 32000, (1, args.n), device="cuda")
    results: dict = {"device": torch.cuda.get_device_name(), "transformers": transformers.__version__, "n": args.n}
    state, reference = None, None
    for implementation in ("sdpa", "flex_attention", "maskc"):
        model = build(args.n, args.layers, implementation, state)
        state = state or {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            logits = model(ids, logits_to_keep=1).logits.float()
            reference = logits if reference is None else reference
            ms = do_bench(lambda model=model: model(ids, logits_to_keep=1), warmup=2, rep=20, return_mode="median")
        error = ((logits - reference).norm() / reference.norm()).item()
        results[implementation] = {"prefill_ms": ms, "relative_difference_vs_sdpa": error}
        print(implementation, json.dumps(results[implementation]))
        del model
        torch.cuda.empty_cache()
    for other in ("sdpa", "flex_attention"):
        results[f"maskc_speedup_vs_{other}"] = results[other]["prefill_ms"] / results["maskc"]["prefill_ms"]
    print(json.dumps(results, indent=2))
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_hf_prefill.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
