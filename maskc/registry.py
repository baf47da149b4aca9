"""The backend registry: name → backend object. The compiler never imports a backend.

A backend is any object with `name`, `supports(q, k, v, pattern) -> str | None` (None when
it can run the call, otherwise the reason it cannot), and `forward(...)`. Built-in backends
register themselves when `maskc.backends` is imported; a third party calls `register_backend`
or exposes an entry point in the group "maskc.backends". A backend may also offer kernels for
maskc's own run-time steps on its device (`register_kernel`; cluster labels on CUDA), which
maskc's code asks for by step and device type (`kernel_for`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Protocol

from maskc.errors import BackendError, MaskcWarning

_BACKENDS: dict[str, Backend] = {}
#: Backends that failed to load: name → why (the import error), so that asking for one says so.
_UNAVAILABLE: dict[str, str] = {}
#: backend="auto" tries the registered backends in increasing priority.
_AUTO_PRIORITY: dict[str, int] = {}
_DISCOVERED = False
#: Kernels backends offer to maskc's run-time work, by (name, device type): `register_kernel`.
_KERNELS: dict[tuple[str, str], Callable[..., Any]] = {}


class Backend(Protocol):
    """What `maskc.attention` needs from a backend."""

    name: str

    def supports(self, q: Any, k: Any, v: Any, pattern: Any) -> str | None:
        """None when this backend can run the call; otherwise why not, for the error message."""

    def forward(self, q: Any, k: Any, v: Any, pattern: Any, *, scale: float | None, return_lse: bool) -> Any:
        """Attention output (and the log-sum-exp per row when return_lse), differentiable."""


def register_backend(backend: Backend, *, auto_priority: int | None = None) -> Backend:
    """Make `backend` available by name; with auto_priority, also to backend="auto" (lower first)."""
    _BACKENDS[backend.name] = backend
    if auto_priority is not None:
        _AUTO_PRIORITY[backend.name] = auto_priority
    return backend


def register_kernel(name: str, device_type: str, kernel: Callable[..., Any]) -> None:
    """Offer `kernel` for the run-time step `name` on tensors of `device_type` (e.g. cluster labels on
    "cuda"): it must compute what maskc's own torch code for that step computes, or return None for
    an input it does not take (torch computes it then). A second, different kernel for the same step
    and device replaces the first, with a warning naming both."""
    earlier = _KERNELS.get((name, device_type))
    if earlier is not None and earlier is not kernel:
        warnings.warn(
            f"{_qualified(kernel)} replaces {_qualified(earlier)} as the {name!r} kernel on {device_type!r}",
            MaskcWarning,
            stacklevel=2,
        )
    _KERNELS[(name, device_type)] = kernel


def _qualified(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


def kernel_for(name: str, device_type: str) -> Callable[..., Any] | None:
    """The kernel a backend offers for step `name` on `device_type`, or None (backends found first, even
    for CPU tensors, so the answer does not depend on which backend a process happened to import)."""
    _discover()
    return _KERNELS.get((name, device_type))


#: The built-in backends, each a subpackage of maskc.backends that registers itself on import.
BUILT_IN = ("cpu", "triton")


def _discover() -> None:
    """Import the built-in backends and any installed through entry points, once.

    One backend failing to import (Triton missing, a broken plugin) leaves the others usable;
    its error is kept and reported when that backend is asked for, never hidden."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for name in BUILT_IN:
        _load(name, lambda name=name: import_module(f"maskc.backends.{name}"))
    for entry in entry_points(group="maskc.backends"):
        _load(entry.name, entry.load)


def _load(name: str, load: Callable[[], object]) -> None:
    try:
        load()
    except Exception as err:  # any failure makes the backend unavailable, with its reason
        _UNAVAILABLE[name] = f"{type(err).__name__}: {err}"


def find_backends() -> None:
    """Import the built-in and installed backends (once; later calls return at once)."""
    _discover()


def available_backends() -> list[str]:
    _discover()
    return sorted(_BACKENDS)


def get_backend(name: str) -> Backend:
    _discover()
    if name not in _BACKENDS:
        available = ", ".join(sorted(_BACKENDS)) or "none"
        if name in _UNAVAILABLE:
            raise BackendError(f"backend {name!r} failed to load ({_UNAVAILABLE[name]}); available: {available}")
        raise BackendError(f"unknown backend {name!r}; available: {available}")
    return _BACKENDS[name]


def choose_backend(q: Any, k: Any, v: Any, pattern: Any, name: str = "auto") -> Backend:
    """The named backend if it supports the call, or for "auto" the first one that does."""
    if name != "auto":
        backend = get_backend(name)
        reason = backend.supports(q, k, v, pattern)
        if reason is not None:
            raise BackendError(f"{reason} (backend {name!r} cannot run this call)")
        return backend
    _discover()
    reasons = []
    for candidate in sorted(_AUTO_PRIORITY, key=_AUTO_PRIORITY.__getitem__):
        reason = _BACKENDS[candidate].supports(q, k, v, pattern)
        if reason is None:
            return _BACKENDS[candidate]
        reasons.append((candidate, reason))
    if not reasons:
        raise BackendError("no backend is registered")
    if len({reason for _, reason in reasons}) == 1:
        raise BackendError(f"{reasons[0][1]} (no backend can run this call)")
    raise BackendError("; ".join(f"{name}: {reason}" for name, reason in reasons) + " (no backend can run this call)")
