"""CPU reference backend: exact sparse attention on the element-level CSR (scipy.sparse), differentiable.

Registered as "cpu". backend="auto" tries it after accelerator backends, and it takes any call
on CPU tensors.
"""

from maskc.registry import register_backend

from .backend import CpuBackend

#: Place in backend="auto"'s order: after the accelerator backends.
AUTO_PRIORITY = 100

register_backend(CpuBackend(), auto_priority=AUTO_PRIORITY)

__all__ = ["CpuBackend"]
