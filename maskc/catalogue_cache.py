"""Catalogue rows kept on disk, so that `maskc catalogue` recomputes only what changed.

A row is keyed by the spec's content hash, its name and description, n, and a hash of maskc's own
source files: any change to the code or the spec computes it again. The file is plain JSON, read
with every field checked (a damaged file is ignored and rewritten) and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from maskc.spec import Spec

CACHE_DIR_ENV = "MASKC_CACHE_DIR"


@lru_cache(maxsize=1)
def code_hash() -> str:
    """A hash of every Python file of the maskc package (their bytes), so new code means new rows."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _key(spec: Spec, seq_len: int | None) -> str:
    return json.dumps([spec.content_hash(), spec.name, spec.description, seq_len], sort_keys=True)


class RowCache:
    """Rows by key, loaded from and saved to one JSON file per code version."""

    def __init__(self, path: Path | None, rows: dict[str, Any]) -> None:
        self.path, self.rows, self.changed = path, rows, False

    @classmethod
    def open(cls) -> RowCache:
        root = os.environ.get(CACHE_DIR_ENV)
        base = Path(root) if root else Path.home() / ".cache" / "maskc"
        path = base / "catalogue" / f"rows-{code_hash()}.json"
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rows = {}
        return cls(path, rows if isinstance(rows, dict) else {})

    def get(self, spec: Spec, seq_len: int | None) -> Any:
        """The stored JSON of a row (unchecked: the caller checks every field), or None."""
        return self.rows.get(_key(spec, seq_len))

    def put(self, spec: Spec, seq_len: int | None, row: dict[str, Any]) -> None:
        self.rows[_key(spec, seq_len)] = row
        self.changed = True

    def save(self) -> None:
        """Write the file if anything was added; a cache that cannot be written is simply not kept."""
        if not self.changed or self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(self.rows, out)
            os.replace(temporary, self.path)
        except OSError:
            pass
