"""The cluster labels' kernel (backends/triton/kernels/nearest.py) under Triton's interpreter: the
label of every point attains the largest score in float64, equals maskc.clustering's torch
computation, breaks ties to the lower label as torch.argmax does, and is what `cluster_labels`
gives on the device the kernel is registered for."""

from __future__ import annotations

import pytest
import torch
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)

from maskc import registry
from maskc.backends.triton.nearest import LARGEST_DIM, bfloat16_pieces, nearest_direction, nearest_labels
from maskc.backends.triton.rows import permute_rows
from maskc.clustering import cluster_labels, torch_nearest_direction
from maskc.clustering import nearest_direction as checked_nearest
from maskc.errors import BackendError
from maskc.primitives.cluster import Cluster


def _draw(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _scores64(x: torch.Tensor, directions: torch.Tensor, signed: bool) -> torch.Tensor:
    scores = torch.matmul(x.double(), directions.double().transpose(1, 2))
    return torch.cat([scores, -scores], dim=-1) if signed else scores


# (groups, points, dim, directions, signed, dtype, one set of directions for every group)
CASES = [
    (3, 100, 64, 20, False, torch.float32, False),  # points off the 64-point block
    (2, 70, 128, 181, False, torch.bfloat16, False),  # k-means's √n clusters: two steps of 128
    (2, 65, 80, 16, True, torch.float16, True),  # LSH: signed, a dim off powers of two, shared directions
    (1, 5, 16, 3, True, torch.float32, True),  # fewer directions than a product's 16 columns
    (2, 200, 32, 300, False, torch.float32, False),  # three steps, the last partial
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"G{c[0]}-P{c[1]}-D{c[2]}-M{c[3]}-{'signed' * c[4] or 'plain'}")
def test_labels_attain_the_largest_score(case: tuple) -> None:
    groups, points, dim, count, signed, dtype, shared = case
    x = _draw(groups, points, dim, seed=1, dtype=dtype)
    directions = torch.nn.functional.normalize(_draw(1 if shared else groups, count, dim, seed=2), dim=-1)
    labels = nearest_direction(x, directions, signed)
    scores = _scores64(x, directions, signed)
    assert labels.dtype == torch.int64 and labels.shape == (groups, points)
    assert int(labels.min()) >= 0 and int(labels.max()) < count * (2 if signed else 1)
    gap = scores.max(dim=-1).values - scores.gather(-1, labels[..., None])[..., 0]
    assert float(gap.max()) <= 1e-5 * float(scores.abs().max())
    assert torch.equal(labels, torch_nearest_direction(x, directions, signed))


def test_ties_go_to_the_lower_label() -> None:
    """Repeated directions tie exactly: the first wins, as torch.argmax's first maximum; a point
    orthogonal to every direction scores 0 on both signs and takes label 0; zero points too."""
    base = torch.nn.functional.normalize(_draw(1, 5, 16, seed=3), dim=-1)
    directions = torch.cat([base, base], dim=1)  # direction m and 5 + m are equal
    x = torch.cat([_draw(1, 40, 16, seed=4), torch.zeros(1, 3, 16)], dim=1)
    labels = nearest_direction(x, directions, False)
    assert int(labels.max()) < 5
    assert torch.equal(labels, torch_nearest_direction(x, directions, False))
    assert labels[0, -3:].tolist() == [0, 0, 0]
    orthogonal = torch.zeros(1, 1, 16)
    orthogonal[0, 0, 0] = 1.0
    axis = torch.zeros(1, 2, 16)
    axis[0, :, 1] = 1.0  # both directions orthogonal to the point: x·d = 0 = −x·d
    assert nearest_direction(orthogonal, axis, True).tolist() == [[0]]
    assert torch_nearest_direction(orthogonal, axis, True).tolist() == [[0]]


def test_strided_points() -> None:
    """Points as a view (heads of a (B, N, H, D) tensor) give the labels of their contiguous copy."""
    stored = _draw(2, 90, 3, 32, seed=5, dtype=torch.bfloat16)
    view = stored[:, :, 1]  # head 1: (2, 90, 32), rows 96 elements apart
    directions = torch.nn.functional.normalize(_draw(2, 24, 32, seed=6), dim=-1)
    assert view.stride(1) == 96
    contiguous = nearest_direction(view.contiguous(), directions, False)
    assert torch.equal(nearest_direction(view, directions, False), contiguous)


def test_ties_across_steps_of_the_walk() -> None:
    """Direction 70 (in the walk's second step of 64) repeats direction 3: the earlier step's label
    stays, for the directions and, signed, for their negatives (label M + 3)."""
    directions = torch.nn.functional.normalize(_draw(1, 100, 32, seed=12), dim=-1)
    directions[0, 70] = directions[0, 3]
    towards = directions[:, 3:4] * 2.0  # a point on direction 3: 3 and 70 tie at the top
    assert nearest_direction(towards, directions, False).tolist() == [[3]]
    assert nearest_direction(-towards, directions, True).tolist() == [[103]]
    assert torch_nearest_direction(-towards, directions, True).tolist() == [[103]]


def test_what_the_kernel_does_not_take_is_left_to_torch() -> None:
    """float64 points and head dims over LARGEST_DIM: `nearest_labels` (the registered entry) declines,
    and the op itself refuses them with a message."""
    directions = torch.nn.functional.normalize(_draw(1, 8, 16, seed=13), dim=-1)
    assert nearest_labels(_draw(1, 10, 16, seed=14, dtype=torch.float64), directions, False) is None
    wide = LARGEST_DIM[torch.float32] * 2
    assert nearest_labels(_draw(1, 10, wide, seed=15), _draw(1, 8, wide, seed=16), False) is None
    with pytest.raises(BackendError, match="the label kernel takes"):
        nearest_direction(_draw(1, 10, 16, seed=14, dtype=torch.float64), directions, False)


def test_bad_shapes_are_named() -> None:
    x = _draw(2, 10, 16, seed=7)
    with pytest.raises(BackendError, match=r"directions must be \(1 or 2, M >= 1, 16\)"):
        checked_nearest(x, _draw(3, 4, 16, seed=8), False)
    with pytest.raises(BackendError, match=r"directions must be \(1, M >= 1, 16\)"):
        checked_nearest(x[:1], torch.zeros(1, 0, 16), False)
    with pytest.raises(BackendError, match="points must be"):
        checked_nearest(x[0], _draw(1, 4, 16, seed=8), False)
    with pytest.raises(BackendError, match="permute_rows takes"):
        order = torch.zeros(1, 1, 10, dtype=torch.int64)
        permute_rows(_draw(1, 2, 10, 16, seed=9), order, order)


def test_cluster_labels_use_the_kernel_offered_for_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cluster_labels` asks the registry for its device's kernel: offered for "cpu" here (the
    interpreter runs it), held centroids and LSH buckets come from it and equal torch's labels."""
    calls = []

    def counted(x: torch.Tensor, directions: torch.Tensor, signed: bool) -> torch.Tensor:
        calls.append(signed)
        return nearest_direction(x, directions, signed)

    q, k = _draw(1, 2, 96, 32, seed=9), _draw(1, 2, 96, 32, seed=10)
    centroids = _draw(2, 12, 32, seed=11)
    kinds = [
        (Cluster(clusters=12, method="kmeans"), centroids),  # held centroids
        (Cluster(clusters=8, method="lsh"), None),
        (Cluster(clusters=6, method="kmeans", iterations=2), None),  # fitted: its final labels
    ]
    expected = [cluster_labels(params, q, k, centroids=held) for params, held in kinds]
    monkeypatch.setitem(registry._KERNELS, ("nearest_direction", "cpu"), counted)
    got = [cluster_labels(params, q, k, centroids=held) for params, held in kinds]
    assert calls == [False, False, True, True, False, False]
    for (a, b), (c, d) in zip(got, expected):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_bfloat16_pieces_sum_to_the_directions_exactly() -> None:
    """The bfloat16 points' products use three bfloat16 pieces of each direction: together, the value."""
    directions = torch.nn.functional.normalize(_draw(4, 50, 64, seed=17), dim=-1) * 3.0
    pieces = bfloat16_pieces(directions)
    assert pieces.dtype == torch.bfloat16 and pieces.shape == (3, *directions.shape)
    assert torch.equal(pieces.double().sum(0), directions.double())
