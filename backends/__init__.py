"""Built-in backends (imported as maskc.backends). Each subpackage registers itself on import."""

from . import cpu, triton  # noqa: F401
