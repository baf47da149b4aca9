"""Errors a user can act on: each names what is wrong and where (file, line, field path)."""

from __future__ import annotations

from maskc.origin import Origin


class MaskcError(Exception):
    """Base class of every error maskc raises on bad input; the CLI prints it and exits 2."""


class SpecError(MaskcError):
    """A spec that cannot be loaded, validated or compiled, with its location."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        path: str | Origin | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.source = source
        #: The field path as printed; `origin` keeps its steps when lowering raised the error.
        self.origin = path if isinstance(path, Origin) else None
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.source:
            where.append(self.source if self.line is None else f"{self.source}:{self.line}")
        if self.path:
            where.append(self.path)
        prefix = ": ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message

    def located(self, *, source: str | None = None, line: int | None = None) -> SpecError:
        """The same error with a file name and line filled in."""
        return SpecError(
            self.message,
            source=source or self.source,
            path=self.origin or self.path,
            line=line if line is not None else self.line,
        )


class SpecValidationError(SpecError, ValueError):
    """A spec object built in Python (`maskc.Window(before=-1)`) with a bad field. Also a ValueError,
    as the pydantic error it replaces was, so code that caught that keeps working."""


class ArgumentError(SpecError):
    """A value passed to compile (seq_len=, block_size=, heads=) or on the command line, not the spec's.

    `argument` names the parameter; the CLI shows it as its flag (`--seq-len`), Python as `seq_len=`.
    """

    def __init__(self, message: str, *, argument: str) -> None:
        self.argument = argument
        super().__init__(message, source=f"{argument}=", path=argument)

    def __str__(self) -> str:
        return f"{self.argument}=: {self.message}"

    def located(self, *, source: str | None = None, line: int | None = None) -> SpecError:
        return self

    def as_flag(self) -> str:
        """The message with the command-line flag: `--seq-len: …`."""
        return f"--{self.argument.replace('_', '-')}: {self.message}"


class DynamicPatternError(MaskcError):
    """An operation needs the concrete mask, but part of it is decided at run time (documents, top-k,
    clusters)."""


class TooLargeError(MaskcError):
    """A dense view was asked for at a size that would not fit in memory."""


class BackendError(MaskcError):
    """No backend can run this call, or the inputs do not fit the compiled pattern."""


class DocumentsError(MaskcError):
    """The documents of a call (or of a compile) do not fit the pattern or the inputs."""


class IRFileError(MaskcError):
    """A saved IR file that cannot be read back: malformed, truncated, altered or from another version."""

    def __init__(self, path: object, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}")


class MaskcWarning(UserWarning):
    """Something legal but probably unintended, such as a query row with no key."""
