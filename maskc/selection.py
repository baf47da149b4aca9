"""Top-k block selection from q and k, on the tensors' own device (no host copy).

score(I, J) = mean query of block I · mean key of block J, in float32, per batch and head; the
`blocks` best candidates of each query block are kept, ties to the lower J, a NaN score as −inf.
The same function serves the CPU reference (which moves the choice to the host) and the GPU
tile-table builder. The scores come from torch ops; the choice from a backend's registered kernel
where one is offered for the device (the Triton backend's, on CUDA), else from a stable sort.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from maskc.registry import kernel_for
from maskc.rules import TopkParams
from maskc.tracing import made_once, tracing_mode


def block_means(x: torch.Tensor, block: int) -> torch.Tensor:
    """(..., N, D) → (..., ceil(N / block), D) float32 means (the last block over the positions it has)."""
    n = x.shape[-2]
    blocks = -(-n // block)
    # zeros pad the last block in x's own dtype, and the sum upcasts as it reads: no float32 copy of x
    padded = x if blocks * block == n else torch.nn.functional.pad(x, (0, 0, 0, blocks * block - n))
    sums = padded.reshape(*x.shape[:-2], blocks, block, x.shape[-1]).sum(dim=-2, dtype=torch.float32)
    return sums / _constant(("block sizes", n, block, x.device), lambda: _block_sizes(n, block, x.device))


def _block_sizes(n: int, block: int, device: torch.device) -> torch.Tensor:
    """(blocks, 1) float32 positions per block, made on the device (no host value enters a device
    tensor: CUDA-graph safe)."""
    starts = torch.arange(-(-n // block), device=device, dtype=torch.float32) * block
    return (n - starts).clamp(max=block)[:, None]


def block_scores(q: torch.Tensor, k: torch.Tensor, block: int, share: str) -> torch.Tensor:
    """(B, H, nb, nb) float32 scores; q (B, H, N, D), k (B, Hkv, N, D). With share="group", each head
    holds the mean score of its group (the query heads reading one key/value head)."""
    b, h, kv_heads = q.shape[0], q.shape[1], k.shape[1]
    group = h // kv_heads
    q_means, k_means = block_means(q, block), block_means(k, block)
    nb = q_means.shape[-2]
    # a key/value head's query heads stacked as one matrix: its key means are not copied per head
    scores = (q_means.view(b, kv_heads, group * nb, -1) @ k_means.transpose(-1, -2)).view(b, h, nb, nb)
    if share == "group" and group > 1:
        scores = scores.view(b, kv_heads, group, nb, nb).mean(dim=2, keepdim=True)
        scores = scores.expand(b, kv_heads, group, nb, nb).reshape(b, h, nb, nb)
    return scores


def select_blocks(q: torch.Tensor, k: torch.Tensor, params: TopkParams, block: int, causal: bool) -> torch.Tensor:
    """(B, H, nb, nb) bool: key block J selected for query block I.

    Candidates rank by score, higher first, ties to the lower J, a NaN score as −inf; the first
    `params.blocks` candidates in that order are kept (all of them when there are fewer). A backend's
    kernel selects where one is offered for the scores' device (`maskc.registry.kernel_for`: the Triton
    backend's on CUDA), torch's stable sort otherwise (`sort_select`): the same selection from the
    same scores.
    """
    scores = block_scores(q, k, block, params.share)
    kernel = kernel_for("select_top", scores.device.type)
    chosen = None if kernel is None else kernel(scores, params.blocks, causal)
    return sort_select(scores, params.blocks, causal) if chosen is None else chosen


def sort_select(scores: torch.Tensor, count: int, causal: bool) -> torch.Tensor:
    """`select_blocks`' selection from (..., nb, nb) scores by a stable descending sort."""
    nb, device = scores.shape[-1], scores.device
    candidate = _constant(("candidates", nb, causal, device), lambda: _candidates(nb, causal, device))
    ranked = scores.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    keyed = torch.where(candidate, ranked, float("-inf"))
    order = torch.sort(keyed, dim=-1, descending=True, stable=True).indices
    first = _constant(("first", nb, count, device), lambda: torch.arange(nb, device=device) < count)
    keep = first & candidate.expand_as(keyed).gather(-1, order)
    return torch.zeros_like(candidate.expand_as(keyed)).scatter(-1, order, keep)


def _candidates(nb: int, causal: bool, device: torch.device) -> torch.Tensor:
    """(nb, nb) bool: key block J is a candidate of query block I (J ≤ I when causal)."""
    if not causal:
        return torch.ones(nb, nb, dtype=torch.bool, device=device)
    index = torch.arange(nb, device=device)
    return index[None, :] <= index[:, None]


#: Tensors that depend only on sizes and the device, by key: made once, since a run-time top-k runs
#: these functions on every call and each op costs host time. Never dropped once kept: a CUDA graph
#: captured after a first call reads them by address. Few and small (bounded below).
_CONSTANTS: dict[tuple, torch.Tensor] = {}
_MAX_CONSTANTS = 64
_MAX_CONSTANT_ELEMENTS = 1 << 22


def _constant(key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`make()`, kept under `key` when it is small and there is room. Made afresh and not kept while
    torch.compile traces or any tracer runs (fake tensors), under inference mode (its tensors could not
    join a later call's autograd), and inside a CUDA graph capture (there `make` is only recorded, and
    its memory belongs to the graph). A constant is made on the stream of the call that first needs
    it; calls on other streams should follow one call on the same stream, as a capture does."""
    if torch.compiler.is_compiling() or tracing_mode():
        return make()
    return made_once(_CONSTANTS, key, make, _may_keep)


def _may_keep(made: torch.Tensor) -> bool:
    """A plain tensor, made outside inference mode, small, with room left (see `_constant`)."""
    return (
        type(made) is torch.Tensor
        and not torch.is_inference_mode_enabled()
        and made.numel() <= _MAX_CONSTANT_ELEMENTS
        and len(_CONSTANTS) < _MAX_CONSTANTS
    )
