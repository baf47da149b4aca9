"""How a sequence of n positions is split over P ranks: which position ranges each rank holds.

"contiguous": rank r holds positions [r·n/P, (r+1)·n/P). "zigzag": the sequence is cut into 2P
equal chunks and rank r holds chunk r and chunk 2P−1−r, so that under a causal pattern every
rank gets one cheap early chunk and one expensive late chunk (equal work for dense causal).
A rank's shard is its chunks concatenated in position order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

from maskc.errors import BackendError

Sharding = Literal["contiguous", "zigzag"]
SHARDINGS: tuple[str, ...] = ("contiguous", "zigzag")


def chunk_count(ranks: int, sharding: str) -> int:
    """Equal chunks the sequence is cut into: P (contiguous) or 2P (zigzag)."""
    check_sharding(sharding)
    return ranks if sharding == "contiguous" else 2 * ranks


def check_sharding(sharding: str) -> None:
    if sharding not in SHARDINGS:
        raise BackendError(f"sharding must be one of {', '.join(SHARDINGS)}; got {sharding!r}")


def check_split(n: int, ranks: int, sharding: str) -> None:
    """n must cut into equal chunks; BackendError naming the sizes otherwise."""
    if ranks < 1:
        raise BackendError(f"the number of ranks must be at least 1; got {ranks}")
    chunks = chunk_count(ranks, sharding)
    if n % chunks:
        raise BackendError(
            f"seq_len {n} does not split into {chunks} equal chunks ({sharding} sharding over {ranks} ranks); "
            f"use a seq_len divisible by {chunks}"
        )


def rank_ranges(n: int, rank: int, ranks: int, sharding: str) -> list[tuple[int, int]]:
    """The position ranges [start, stop) rank `rank` holds, in position order (adjacent chunks as one)."""
    check_split(n, ranks, sharding)
    if not 0 <= rank < ranks:
        raise BackendError(f"rank {rank} is not in 0 … {ranks - 1}")
    size = n // chunk_count(ranks, sharding)
    if sharding == "contiguous" or rank == ranks - 1:  # zigzag's last rank holds two adjacent chunks
        first, last = (rank, rank) if sharding == "contiguous" else (rank, rank + 1)
        return [(first * size, (last + 1) * size)]
    return [(c * size, (c + 1) * size) for c in (rank, 2 * ranks - 1 - rank)]


def positions(n: int, rank: int, ranks: int, sharding: str) -> torch.Tensor:
    """Global positions of the rank's shard, in shard order (int64)."""
    import torch  # here, not at the top: the planner and `maskc plan` need no torch

    return torch.cat([torch.arange(a, b) for a, b in rank_ranges(n, rank, ranks, sharding)])


def shard(x: torch.Tensor, rank: int, ranks: int, sharding: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """This rank's shard of a full-sequence tensor (sequence along `dim`, default 2 as in (B, H, N, D))."""
    import torch  # here, not at the top: the planner and `maskc plan` need no torch

    n = x.shape[dim]
    return torch.cat([x.narrow(dim, a, b - a) for a, b in rank_ranges(n, rank, ranks, sharding)], dim=dim)


def unshard(shards: list[torch.Tensor], sharding: str = "contiguous", dim: int = 2) -> torch.Tensor:
    """The full-sequence tensor from every rank's shard, given in rank order (the inverse of `shard`)."""
    import torch  # here, not at the top: the planner and `maskc plan` need no torch

    ranks = len(shards)
    if ranks == 0:
        raise BackendError("unshard needs at least one shard")
    n = sum(s.shape[dim] for s in shards)
    pieces: list[tuple[int, torch.Tensor]] = []
    for rank, part in enumerate(shards):
        offset = 0
        for a, b in rank_ranges(n, rank, ranks, sharding):
            pieces.append((a, part.narrow(dim, offset, b - a)))
            offset += b - a
    return torch.cat([piece for _, piece in sorted(pieces, key=lambda item: item[0])], dim=dim)
