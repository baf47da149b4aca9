"""Triton GPU backend: block-sparse flash attention generated from the IR, forward and backward.

Registered as "triton" and first in backend="auto"'s order: it takes CUDA tensors (and CPU
tensors under TRITON_INTERPRET=1, which runs the same kernels in Triton's interpreter).
"""

from maskc.registry import register_backend

from . import (
    nearest,  # noqa: F401  (offers its cluster-label kernel to maskc.clustering)
    selection,  # noqa: F401  (offers its top-k selection kernel to maskc.selection)
)
from .backend import TritonBackend

#: Place in backend="auto"'s order: first, ahead of the CPU reference.
AUTO_PRIORITY = 0

register_backend(TritonBackend(), auto_priority=AUTO_PRIORITY)

__all__ = ["TritonBackend"]
