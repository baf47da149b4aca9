"""The backend registry: a backend that fails to import is reported as such, never as unknown."""

from __future__ import annotations

import importlib
import warnings

import pytest

from maskc import registry
from maskc.errors import BackendError, MaskcWarning


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that has discovered nothing yet (restored after the test)."""
    monkeypatch.setattr(registry, "_BACKENDS", {})
    monkeypatch.setattr(registry, "_AUTO_PRIORITY", {})
    monkeypatch.setattr(registry, "_UNAVAILABLE", {})
    monkeypatch.setattr(registry, "_DISCOVERED", False)


def test_a_backend_that_fails_to_import_leaves_the_others_and_says_why(
    fresh_registry: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = importlib.import_module

    def import_module(name: str) -> object:
        if name == "maskc.backends.triton":
            raise ImportError("No module named 'triton'")
        module = real_import(name)
        # Built-ins register on first import only; a fresh registry needs them registered again.
        if name == "maskc.backends.cpu":
            registry.register_backend(module.CpuBackend(), auto_priority=module.AUTO_PRIORITY)
        return module

    monkeypatch.setattr(registry, "import_module", import_module)
    assert registry.available_backends() == ["cpu"]
    failed = r"backend 'triton' failed to load \(ImportError: No module named 'triton'\)"
    with pytest.raises(BackendError, match=failed):
        registry.get_backend("triton")
    with pytest.raises(BackendError, match=r"unknown backend 'trtion'; available: cpu"):
        registry.get_backend("trtion")


def test_kernels_offered_by_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend's kernel for a run-time step is found by step and device type (after the backends are
    found); a second, different one replaces it with a warning naming both."""

    def first(x):
        return x

    def second(x):
        return x

    registry.find_backends()  # their own kernels land in the registry's dict, not in this test's
    monkeypatch.setattr(registry, "_KERNELS", {})
    assert registry.kernel_for("a step", "a device") is None
    registry.register_kernel("a step", "a device", first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same kernel again: nothing to say
        registry.register_kernel("a step", "a device", first)
    assert registry.kernel_for("a step", "a device") is first
    with pytest.warns(MaskcWarning, match=r"test_registry\..*second replaces .*first as the 'a step' kernel"):
        registry.register_kernel("a step", "a device", second)
    assert registry.kernel_for("a step", "a device") is second
