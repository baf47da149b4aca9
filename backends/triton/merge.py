"""The fused merge of a schedule's pass outputs (`kernels/merge.py`), differentiable.

`maskc.schedule.merge.merge_passes` merges in torch: a dozen ops over (B, H, n, D) float32
tensors per pass, forward and backward. Here one kernel reads each pass's (out_p, lse_p) at
each original row's position in the pass and writes (out, lse) once; backward is one kernel per
pass. The tables (`MergeTables`) depend only on the schedule and the device, so they are built
once per pattern. The torch merge stays the reference the tests compare with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .autograd import last_dim_contiguous
from .cache import interpreting
from .kernels import kernel_module
from .launching import launch_kernel


@dataclass(frozen=True)
class MergeTables:
    """Where each original row sits in each pass, on one device.

    `inverse[l, r]` is row r's position in the pass `layer_pass[l]` (−1: not there); a pass that
    holds a row k times gives k layers. `rows[p][i]` is the original row of pass p's row i, −1 on
    the pass's padding up to its size.
    """

    n: int
    inverse: torch.Tensor
    layer_pass: tuple[int, ...]
    rows: tuple[torch.Tensor, ...]

    @classmethod
    def build(cls, q_indices: list[np.ndarray], sizes: list[int], n: int, device: torch.device) -> MergeTables:
        layers, owners, rows = [], [], []
        for p, (index, size) in enumerate(zip(q_indices, sizes)):
            index = np.asarray(index, dtype=np.int64)
            occurrence = _occurrence(index)
            for k in range(int(occurrence.max(initial=-1)) + 1):
                inverse = np.full(n, -1, dtype=np.int32)
                here = np.flatnonzero(occurrence == k)
                inverse[index[here]] = here
                layers.append(inverse)
                owners.append(p)
            padded = np.full(size, -1, dtype=np.int32)
            padded[: len(index)] = index
            rows.append(torch.as_tensor(padded, device=device))
        inverse = np.stack(layers) if layers else np.zeros((0, n), dtype=np.int32)
        return cls(n, torch.as_tensor(inverse, device=device), tuple(owners), tuple(rows))


def _occurrence(index: np.ndarray) -> np.ndarray:
    """For each entry, how many equal entries come before it (0 for a row's first occurrence)."""
    order = np.argsort(index, kind="stable")
    ordered = index[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]] if len(index) else np.zeros(0, dtype=bool)
    first = np.maximum.accumulate(np.where(starts, np.arange(len(index)), 0))
    occurrence = np.empty(len(index), dtype=np.int64)
    occurrence[order] = np.arange(len(index)) - first
    return occurrence


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    """(batch, head, row) strides of a (B, H, rows[, D]) tensor."""
    return x.stride(0), x.stride(1), x.stride(2)


def _value_block(value_dim: int) -> int:
    return max(16, 1 << max(0, value_dim - 1).bit_length())


def _grid(rows: int, batch: int, heads: int) -> tuple[int, int]:
    return (-(-rows // _kernels().BLOCK_ROWS), batch * heads)


def _kernels() -> Any:
    return kernel_module("merge", interpreting())


def merge_forward(
    outs: list[torch.Tensor], lses: list[torch.Tensor], tables: MergeTables
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, n, Dv) in the passes' dtype, lse (B, H, n) in theirs) from the passes' padded outputs."""
    batch, heads, _, value_dim = outs[0].shape
    outs = [last_dim_contiguous(o) for o in outs]
    layer_outs = tuple(outs[p] for p in tables.layer_pass)
    layer_lses = tuple(lses[p] for p in tables.layer_pass)
    out = torch.empty((batch, heads, tables.n, value_dim), dtype=outs[0].dtype, device=outs[0].device)
    lse = torch.empty((batch, heads, tables.n), dtype=lses[0].dtype, device=lses[0].device)
    kernels = _kernels()
    launch_kernel(kernels.maskc_merge_forward, _grid(tables.n, batch, heads),
        layer_outs, layer_lses, tuple(_strides(o) for o in layer_outs), tuple(_strides(s) for s in layer_lses),
        tables.inverse, out, lse, _strides(out), _strides(lse), heads, tables.n, value_dim,
        LAYERS=len(tables.layer_pass), BLOCK_R=kernels.BLOCK_ROWS, VALUE_BLOCK=_value_block(value_dim),
        num_warps=kernels.WARPS,
    )  # fmt: skip
    return out, lse


def merge_backward(
    outs: list[torch.Tensor],
    lses: list[torch.Tensor],
    out: torch.Tensor,
    lse: torch.Tensor,
    d_out: torch.Tensor,
    d_lse: torch.Tensor,
    tables: MergeTables,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(d out_p, d lse_p) of every pass, zeros on its padding."""
    batch, heads, _, value_dim = out.shape
    d_out = last_dim_contiguous(d_out)
    kernels = _kernels()
    d_outs, d_lses = [], []
    for out_p, lse_p, rows in zip(outs, lses, tables.rows):
        out_p = last_dim_contiguous(out_p)
        d_out_p = torch.empty_like(out_p, memory_format=torch.contiguous_format)
        d_lse_p = torch.empty_like(lse_p, memory_format=torch.contiguous_format)
        size = out_p.shape[2]
        if size == 0 or out_p.numel() == 0:
            d_outs.append(d_out_p)
            d_lses.append(d_lse_p)
            continue
        launch_kernel(kernels.maskc_merge_backward, _grid(size, batch, heads),
            out_p, lse_p, rows, out, lse, d_out, d_lse, d_out_p, d_lse_p,
            _strides(out_p), _strides(lse_p), _strides(out), _strides(lse), _strides(d_out), _strides(d_lse),
            _strides(d_out_p), _strides(d_lse_p), heads, size, value_dim,
            BLOCK_R=kernels.BLOCK_ROWS, VALUE_BLOCK=_value_block(value_dim), num_warps=kernels.WARPS,
        )  # fmt: skip
        d_outs.append(d_out_p)
        d_lses.append(d_lse_p)
    return d_outs, d_lses


class MergedPasses(torch.autograd.Function):
    """merge_passes as one kernel: forward (out, lse), backward the passes' (d out_p, d lse_p)."""

    @staticmethod
    def forward(ctx: Any, tables: MergeTables, *parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = len(parts) // 2
        outs, lses = list(parts[:count]), list(parts[count:])
        out, lse = merge_forward(outs, lses, tables)
        ctx.tables = tables
        ctx.save_for_backward(out, lse, *outs, *lses)
        return out, lse

    @staticmethod
    def backward(ctx: Any, d_out: torch.Tensor, d_lse: torch.Tensor) -> tuple[Any, ...]:
        out, lse, *parts = ctx.saved_tensors
        count = len(parts) // 2
        d_outs, d_lses = merge_backward(parts[:count], parts[count:], out, lse, d_out, d_lse, ctx.tables)
        return (None, *d_outs, *d_lses)


def fused_merge(
    outs: list[torch.Tensor], lses: list[torch.Tensor], tables: MergeTables
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (B, H, n, Dv), lse (B, H, n)) of passes' outputs (B, H, size_p, Dv) and lses (B, H, size_p),
    each pass padded past its rows (the padding is never read; its gradient is zero)."""
    return MergedPasses.apply(tables, *outs, *lses)
