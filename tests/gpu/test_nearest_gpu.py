"""The cluster labels' kernel compiled on a CUDA GPU: every label attains the largest score in
float64 to within float32 rounding, and it differs from torch's float32 computation only where the
two best scores lie that close; at the benchmark's size, for held k-means centroids and for LSH
(bfloat16 points: three bfloat16 pieces of the directions), for float32 points (tf32x3), and at
head dim 256 (bfloat16 through the kernel; float32 left to torch by maskc.clustering)."""

from __future__ import annotations

import pytest
import torch

import maskc.clustering
from maskc.backends.triton.nearest import LARGEST_DIM, nearest_labels
from maskc.clustering import _normalised

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _torch_labels(x: torch.Tensor, directions: torch.Tensor, signed: bool) -> torch.Tensor:
    """maskc.clustering's torch computation (float32 unit vectors), whatever kernel is registered."""
    scores = torch.matmul(_normalised(x), directions.float().transpose(1, 2))
    return (torch.cat([scores, -scores], dim=-1) if signed else scores).argmax(dim=-1)


@pytest.mark.parametrize(
    ("count", "signed", "shared", "dtype", "dim"),
    [
        (181, False, False, torch.bfloat16, 128),
        (32, True, True, torch.bfloat16, 128),
        (181, False, False, torch.float32, 128),
        (181, False, False, torch.bfloat16, 256),
        (181, False, False, torch.float32, 256),
    ],
    ids=["kmeans", "lsh", "kmeans-float32", "kmeans-dim256", "kmeans-float32-dim256"],
)
def test_labels_against_float64(count: int, signed: bool, shared: bool, dtype: torch.dtype, dim: int) -> None:
    torch.manual_seed(0)
    groups, points = 16, 32768 * 128 // dim
    x = torch.randn(groups, points, dim, device="cuda", dtype=dtype)
    directions = torch.nn.functional.normalize(torch.randn(1 if shared else groups, count, dim, device="cuda"), dim=-1)
    taken = nearest_labels(x, directions, signed) is not None
    assert taken == (dim <= LARGEST_DIM[dtype])
    labels = maskc.clustering.nearest_direction(x, directions, signed)
    scores = torch.matmul(x.double(), directions.double().transpose(1, 2))
    scores = torch.cat([scores, -scores], dim=-1) if signed else scores
    top2 = scores.topk(2, dim=-1).values
    got = scores.gather(-1, labels[..., None])[..., 0]
    scale = float(scores.abs().max())
    assert float((top2[..., 0] - got).max()) <= 1e-6 * scale
    differ = labels != _torch_labels(x, directions, signed)
    close = (top2[..., 0] - top2[..., 1]) <= 1e-5 * scale
    assert bool((~differ | close).all()), f"{int((differ & ~close).sum())} labels differ with a clear winner"
    assert int(differ.sum()) <= 1e-4 * labels.numel()
