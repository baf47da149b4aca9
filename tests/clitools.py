"""Running the `maskc` command in a real subprocess, as a user would, for the CLI tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: The repository root: commands run from here, so `specs/...` paths work as in the README.
ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m maskc ARGS` from the repository root, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", "maskc", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> str:
    """Write a spec file into `folder` and return its path."""
    path = folder / name
    path.write_text(text)
    return str(path)
