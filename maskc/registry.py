"""The backend registry: name → backend object. The compiler never imports a backend.

A backend is any object with `name`, `supports(q, k, v, pattern) -> str | None` (None when
it can run the call, otherwise the reason it cannot), and `forward(...)`. Built-in backends
register themselves when `maskc.backends` is imported; a third party calls `register_backend`
or exposes an entry point in the group "maskc.backends".
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any, Protocol

from maskc.errors import BackendError

_BACKENDS: dict[str, Backend] = {}
#: backend="auto" tries the registered backends in increasing priority.
_AUTO_PRIORITY: dict[str, int] = {}
_DISCOVERED = False


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


def _discover() -> None:
    """Import the built-in backends and any installed through entry points, once."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import_module("maskc.backends")
    for entry in entry_points(group="maskc.backends"):
        entry.load()


def available_backends() -> list[str]:
    _discover()
    return sorted(_BACKENDS)


def get_backend(name: str) -> Backend:
    _discover()
    if name not in _BACKENDS:
        raise BackendError(f"unknown backend {name!r}; available: {', '.join(sorted(_BACKENDS)) or 'none'}")
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
