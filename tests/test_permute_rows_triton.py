"""Row permutations (backends/triton/rows.py) under Triton's interpreter: the rows of x in a per-(batch,
head) order, equal to torch's gather, for strided inputs and a head size off powers of two; the
gradient is the inverse permutation of the incoming one (what gather's backward gives); and the op
composes with its inverse to the identity."""

from __future__ import annotations

import pytest
import torch
from interpreter import interpreter  # noqa: F401  (fixture: kernels run in Triton's interpreter)

from maskc.backends.triton.rows import inverse_order, permute_rows


def _orders(batch: int, heads: int, rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(rows, generator=generator) for _ in range(batch * heads)]
    return torch.stack(orders).view(batch, heads, rows)


@pytest.mark.parametrize(("rows", "dim", "dtype"), [(130, 64, torch.bfloat16), (64, 48, torch.float32)])
def test_rows_in_order_and_the_gradient(rows: int, dim: int, dtype: torch.dtype) -> None:
    order = _orders(2, 3, rows, seed=1).to(torch.int32)
    inverse = inverse_order(order)
    assert torch.equal(order.long().gather(-1, inverse.long()), torch.arange(rows).expand(2, 3, rows))
    stored = torch.randn(2, rows, 3, dim, generator=torch.Generator().manual_seed(2)).to(dtype)
    x = stored.transpose(1, 2).requires_grad_()  # (2, 3, rows, dim), rows 3·dim apart: strided
    y = permute_rows(x, order, inverse)
    want = x.detach().gather(2, order.long()[..., None].expand(-1, -1, -1, dim))
    assert y.is_contiguous() and torch.equal(y, want)
    grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    y.backward(grad)
    reference = x.detach().clone().requires_grad_()
    reference.gather(2, order.long()[..., None].expand(-1, -1, -1, dim)).backward(grad)
    assert torch.equal(x.grad, reference.grad)
    assert torch.equal(permute_rows(y.detach(), inverse, order), x.detach())
