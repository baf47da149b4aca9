"""Documents of packed sequences: the ids a call passes, checked, and what a pattern needs of them.

A call passes `documents`, an integer tensor (B, N) of document ids, non-decreasing along N.
`document_ids` checks one sequence's ids on the host (compile, the CLI); `check_documents` checks a
call's tensor where it lies, so a GPU call needs no copy of it, and by default no read back either
(`CHECK_DOCUMENTS`).
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from maskc.errors import DocumentsError

if TYPE_CHECKING:
    import torch

    from maskc.ir import CompiledPattern
    from maskc.tensor_memo import LastTensor


def uses_documents(pattern: CompiledPattern) -> bool:
    """Whether a compiled pattern has leaves decided by the documents (document, per-document sets).
    Asked on every call, so answered once per pattern (its layouts do not change)."""
    found = _USES_DOCUMENTS.get(pattern)
    if found is None:
        leaves = (leaf for layout in pattern.layouts for leaf in layout.rule.leaves())
        found = _USES_DOCUMENTS[pattern] = any(getattr(leaf, "decided_by", None) == "documents" for leaf in leaves)
    return found


_USES_DOCUMENTS: weakref.WeakKeyDictionary[CompiledPattern, bool] = weakref.WeakKeyDictionary()


def ids_from_lengths(lengths: Sequence[int]) -> np.ndarray:
    """Document lengths [l0, l1, …] → ids 0 (l0 times), 1 (l1 times), …"""
    lengths = list(lengths)
    bad = [x for x in lengths if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1]
    if not lengths or bad:
        raise DocumentsError(f"document lengths must be whole numbers ≥ 1, got {lengths!r}")
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def document_ids(documents: Any, n: int) -> np.ndarray:
    """One sequence's ids as int64 (n,), checked: integers, length n, non-decreasing.

    Compile and the CLI call it on the host: a tensor can only be given where torch is already
    imported, so torch is not imported here for the check."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(documents, torch.Tensor):
        if documents.is_floating_point() or documents.is_complex() or documents.dtype == torch.bool:
            raise DocumentsError(f"documents must hold integer ids, got dtype {documents.dtype}")
        documents = documents.detach().cpu().numpy()
    ids = np.asarray(documents)
    if ids.dtype.kind not in "iu":
        raise DocumentsError(f"documents must hold integer ids, got {ids.dtype} values")
    if ids.shape != (n,):
        raise DocumentsError(f"documents must give one id per position, shape ({n},); got shape {ids.shape}")
    drops = np.flatnonzero(ids[1:] < ids[:-1])
    if len(drops):
        at = int(drops[0])
        raise DocumentsError(
            f"document ids must be non-decreasing along the sequence; position {at + 1} has id {ids[at + 1]} "
            f"after {ids[at]}"
        )
    return ids.astype(np.int64)


#: How a call's document ids are checked to be non-decreasing: "sync" reads the answer back on every
#: call and raises DocumentsError naming the first decreasing position; "once" does so the first time
#: a tensor is seen and not again while it is unchanged (same object, same version); "async" queues a device-side
#: assertion (torch._assert_async) that fails the call, or the next synchronising op, with a shorter
#: message and no position, without waiting for the device. Unset: "sync" on the CPU (where a read
#: waits for nothing), "once" on a GPU (a model's layers share one tensor, so a forward reads back
#: once, at its first layer); "async" whenever torch.compile traces or a CUDA graph captures the call.
CHECK_DOCUMENTS = "MASKC_CHECK_DOCUMENTS"

#: The message of the asynchronous check.
ORDER_MESSAGE = (
    "maskc: document ids must be non-decreasing along the sequence (documents= of the call); "
    f"set {CHECK_DOCUMENTS}=sync to raise DocumentsError with the position"
)


def _under_capture(device: torch.device) -> bool:
    """Whether the call is traced or captured, where reading a value back to the host is not allowed."""
    import torch

    from maskc.tracing import capturing

    return torch.compiler.is_compiling() or capturing(device)


def order_check(device: torch.device) -> str:
    """ "sync", "once" or "async": how the order of the ids is checked on `device` now (see CHECK_DOCUMENTS)."""
    chosen = os.environ.get(CHECK_DOCUMENTS, "")
    if chosen not in ("", "sync", "once", "async"):
        raise DocumentsError(f"{CHECK_DOCUMENTS} must be sync, once or async, got {chosen!r}")
    if _under_capture(device):
        return "async"
    return chosen or ("sync" if device.type == "cpu" else "once")


@functools.cache
def _checked() -> LastTensor:
    """The last documents tensor whose order a "once" check read back and found non-decreasing
    (made on first use: the tensor memo needs torch, which a host-only command never imports)."""
    from maskc.tensor_memo import LastTensor

    return LastTensor()


def check_documents(documents: Any, batch: int, n: int, device: torch.device) -> torch.Tensor:
    """A call's documents, checked against its batch, length and device, and non-decreasing.

    Shape, dtype and device are checked on the host. The order is checked as `order_check` says: by
    default with a read back that raises DocumentsError with the position, on a GPU once per tensor (a
    read stalls the queue); under CUDA graphs and torch.compile, which allow no read, and with
    MASKC_CHECK_DOCUMENTS=async, through a device-side assertion.
    """
    import torch

    if not isinstance(documents, torch.Tensor):
        raise DocumentsError(f"documents must be a torch tensor ({batch}, {n}), got {type(documents).__name__}")
    if documents.is_floating_point() or documents.is_complex() or documents.dtype == torch.bool:
        raise DocumentsError(f"documents must hold integer ids, got dtype {documents.dtype}")
    if tuple(documents.shape) != (batch, n):
        raise DocumentsError(
            f"documents must have shape (batch, seq_len) = ({batch}, {n}); got {tuple(documents.shape)}"
        )
    if documents.device != device:
        raise DocumentsError(f"documents are on {documents.device}, but q is on {device}; put them on one device")
    how = order_check(device)
    if n == 1 or (how == "once" and _checked().get(documents)):
        return documents
    drops = documents[:, 1:] < documents[:, :-1]
    if how == "async":
        torch._assert_async(~drops.any(), ORDER_MESSAGE)
    elif bool(drops.any()):
        b, at = drops.nonzero()[0].tolist()
        raise DocumentsError(
            f"document ids must be non-decreasing along the sequence; batch element {b}, position {at + 1} "
            f"has id {int(documents[b, at + 1])} after {int(documents[b, at])}"
        )
    elif how == "once":
        _checked().put(documents, True)
    return documents
