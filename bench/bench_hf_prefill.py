"""Prefill of a long prompt through an HF transformers model: attn_implementation "maskc" against
"sdpa" and "flex_attention", same weights, same run.

Run on a CUDA machine: python3 bench/bench_hf_prefill.py [--n 32768] [--layers 4]
`--tiny` runs the same comparison end to end on the CPU at a toy size (hidden 64, window 16, n 256,
float32), to check the script, not to time anything.
A Mistral-style model (hidden 4096, 32 query / 8 KV heads, head dim 128, bf16, random weights,
nothing downloaded) with a causal sliding window of 4096: transformers' own sliding-window masks for
"sdpa" and "flex_attention", and specs/mistral_swa.yaml for "maskc" (the same mask). The median
time of one forward pass over the prompt (no cache, no gradients) per implementation, and the
largest relative difference of the last position's logits against "sdpa". Writes JSON to
$OUT/bench_hf_prefill.json when OUT is set.

`--packed` instead runs a flattened batch of 8 documents (issue 13's lengths scaled to n; position_ids
restarting at 0 for each) under the window intersected with `document`, through "maskc" twice: with
the documents' layout built once per forward and shared by the layers (the default), and built in
every layer (MASKC_REUSE_LAYOUT=0); the same mask, so their logits agree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
import transformers
from triton.testing import do_bench

import maskc.hf


@dataclass(frozen=True)
class Size:
    """The model and where it runs."""

    vocab: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    window: int
    device: str
    dtype: torch.dtype


FULL = Size(32000, 4096, 14336, 32, 8, 4096, "cuda", torch.bfloat16)
TINY = Size(97, 64, 96, 4, 2, 16, "cpu", torch.float32)


#: Issue 13's document lengths (they sum to 32768), scaled to n for --packed.
LENGTHS = [2381, 1211, 2568, 1799, 1174, 5864, 13954, 3817]


def window_spec(window: int, packed: bool = False) -> dict:
    """specs/mistral_swa.yaml's causal window, at `window` keys counting the query itself; `packed`: inside
    each document."""
    window_part = {"window": {"before": window - 1, "after": 0}}
    if not packed:
        return {"name": "mistral-swa", "causal": True, "pattern": window_part}
    return {"name": "mistral-swa-packed", "causal": True, "pattern": {"intersect": [{"document": {}}, window_part]}}


def packed_positions(n: int, device: str) -> torch.Tensor:
    """(1, n) position_ids of LENGTHS scaled to n documents, each counting from 0."""
    ends = [round(sum(LENGTHS[: i + 1]) * n / sum(LENGTHS)) for i in range(len(LENGTHS))]
    starts = [0, *ends[:-1]]
    return torch.cat([torch.arange(end - start, device=device) for start, end in zip(starts, ends)])[None]


def build(
    size: Size, n: int, layers: int, implementation: str, state: dict | None, packed: bool = False
) -> transformers.PreTrainedModel:
    config = transformers.MistralConfig(
        vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=n, sliding_window=size.window, maskc_spec=window_spec(size.window, packed),
        maskc_seq_len=n,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=implementation)
    model = model.to(size.device, size.dtype).eval()
    if state is not None:
        model.load_state_dict(state)
    return model


def median_ms(run, device: str) -> float:
    """Median milliseconds of run(): triton's do_bench on CUDA, a wall clock on the CPU."""
    if device == "cuda":
        return do_bench(run, warmup=2, rep=20, return_mode="median")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=32768)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tiny", action="store_true", help="a toy model on the CPU: checks the script end to end")
    parser.add_argument("--packed", action="store_true", help="packed documents: the layout built once or per layer")
    args = parser.parse_args()
    size, n = (TINY, min(args.n, 256)) if args.tiny else (FULL, args.n)
    maskc.hf.register()
    if args.packed:
        return packed(size, n, args.layers)
    ids = torch.randint(0, size.vocab, (1, n), device=size.device)
    results: dict = {"device": _device_name(size), "transformers": transformers.__version__, "n": n}
    results["window"] = size.window
    state, reference = None, None
    for implementation in ("sdpa", "flex_attention", "maskc"):
        model = build(size, n, args.layers, implementation, state)
        state = state or {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            logits = model(ids, logits_to_keep=1).logits.float()
            reference = logits if reference is None else reference
            ms = median_ms(lambda model=model: model(ids, logits_to_keep=1), size.device)
        error = ((logits - reference).norm() / reference.norm()).item()
        results[implementation] = {"prefill_ms": ms, "relative_difference_vs_sdpa": error}
        print(implementation, json.dumps(results[implementation]))
        del model
        if size.device == "cuda":
            torch.cuda.empty_cache()
    for other in ("sdpa", "flex_attention"):
        results[f"maskc_speedup_vs_{other}"] = results[other]["prefill_ms"] / results["maskc"]["prefill_ms"]
    save(results)


def packed(size: Size, n: int, layers: int) -> None:
    """A flattened batch of documents through "maskc", its layout shared by the layers or built in each."""
    ids = torch.randint(0, size.vocab, (1, n), device=size.device)
    positions = packed_positions(n, size.device)
    model = build(size, n, layers, "maskc", None, packed=True)
    results: dict = {"device": _device_name(size), "transformers": transformers.__version__, "n": n,
                     "window": size.window, "layers": layers, "documents": len(LENGTHS)}  # fmt: skip
    reference = None
    for reuse in ("1", "0"):
        with mock.patch.dict(os.environ, {"MASKC_REUSE_LAYOUT": reuse}), torch.no_grad():
            logits = model(ids, position_ids=positions, logits_to_keep=1).logits.float()
            reference = logits if reference is None else reference
            ms = median_ms(lambda: model(ids, position_ids=positions, logits_to_keep=1), size.device)
        name = "layout_shared" if reuse == "1" else "layout_per_layer"
        error = ((logits - reference).norm() / reference.norm()).item()
        results[name] = {"prefill_ms": ms, "relative_difference_vs_shared": error}
        print(name, json.dumps(results[name]))
    results["shared_speedup"] = results["layout_per_layer"]["prefill_ms"] / results["layout_shared"]["prefill_ms"]
    save(results)


def _device_name(size: Size) -> str:
    return torch.cuda.get_device_name() if size.device == "cuda" else "cpu (--tiny: not a measurement)"


def save(results: dict) -> None:
    print(json.dumps(results, indent=2))
    out = os.environ.get("OUT")
    if out:
        Path(out, "bench_hf_prefill.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
