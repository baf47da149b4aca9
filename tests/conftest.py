"""Hypothesis profiles: derandomized by default, so that a run of the suite (CI's included) is
reproducible and a failure is seen again on the next run; `MASKC_HYPOTHESIS=explore` draws new
examples each run, to look for bugs the fixed draw does not reach."""

from __future__ import annotations

import os

from hypothesis import settings
from interpreter import import_triton_for_the_interpreter

settings.register_profile("fixed", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("explore" if os.environ.get("MASKC_HYPOTHESIS") == "explore" else "fixed")

# Before any test module: whichever module a worker happens to import first (torch.compile's tests
# import triton through inductor), the interpreter tests after it must find triton.language
# imported for the interpreter (see `import_triton_for_the_interpreter`).
import_triton_for_the_interpreter()
