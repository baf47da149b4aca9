"""A module-scoped fixture running Triton kernels in its CPU interpreter, for test modules that import it."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def interpreter(tmp_path_factory: pytest.TempPathFactory):
    """TRITON_INTERPRET=1 and a fresh kernel cache for the importing module only; restored afterwards.

    Generated kernel modules read the variable when they load, so it is set before the first call.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        patch.setenv("MASKC_CACHE_DIR", str(tmp_path_factory.mktemp("maskc-cache")))
        yield


def import_triton_for_the_interpreter() -> None:
    """Import triton.language as Triton's interpreter needs it, before a library imports it without.

    Triton decides when triton.language is first imported whether its own helpers (tl.zeros, …) run
    in the interpreter; a library that imports triton first (transformers does) would leave them
    compiled-only, and interpreter tests later in the same process would fail. On a machine with a
    GPU nothing is done: there the kernels run compiled.
    """
    import sys

    import torch

    if torch.cuda.is_available() or "triton.language" in sys.modules:
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        import triton.language  # noqa: F401
