"""What a call does on the host around its kernels: torch ops dispatched, device→host reads and host→device
uploads, counted per maskc function with a torch dispatch mode.

A run-time layout (documents, top-k, clusters) is built per call with torch ops; each op costs host
time (Python and dispatch), and a read of a value back to the host (`.item()`, `bool(t)`, `.tolist()`,
`.cpu()`, `.numpy()`) waits for the device queue to drain, while an upload of host data (a tensor made
from Python or NumPy values) cannot be captured in a CUDA graph. On the CPU neither is visible as a
wait, so they are counted instead: ops through the dispatch mode; reads as the ops that read (item,
is_nonzero, copies to the CPU) and through wrappers of the tensor methods that read; uploads as the
op that makes a tensor of host data. Only what maskc's own code asks for is counted: ops made inside
Triton (its CPU interpreter running the kernels) are left out, and each op is charged
to the innermost maskc function on the stack (`module.function`).

Used by tests/test_runtime_host.py and by bench/runtime_host_ops.py (which prints the counts).
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
#: Source folders whose functions are charged with the ops they dispatch.
OWN = tuple(str(ROOT / part) for part in ("maskc", "backends"))

#: Aten ops that read a value back to the host.
READ_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal"}
#: Tensor methods that read values back to the host without always dispatching an op on the CPU.
READ_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")
#: The op that makes a tensor from host data (torch.tensor, torch.as_tensor of a list or an array, a Python
#: number assigned into a tensor): a copy to the device, which a CUDA graph cannot capture.
UPLOAD_OP = "aten::lift_fresh"


@dataclass
class HostOps:
    """Counts of one run, by `module.function` of maskc's code."""

    ops: Counter = field(default_factory=Counter)
    reads: Counter = field(default_factory=Counter)
    uploads: Counter = field(default_factory=Counter)
    #: (function, what) of every read and upload, in order
    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total_ops(self) -> int:
        return sum(self.ops.values())

    @property
    def total_reads(self) -> int:
        return sum(self.reads.values())

    @property
    def total_uploads(self) -> int:
        return sum(self.uploads.values())

    def table(self) -> str:
        """One line per function: ops, reads, uploads; totals last."""
        names = sorted(set(self.ops) | set(self.reads) | set(self.uploads), key=lambda f: -self.ops[f])
        lines = [f"{'function':<58} {'ops':>5} {'reads':>5} {'uploads':>7}"]
        lines += [f"{f:<58} {self.ops[f]:>5} {self.reads[f]:>5} {self.uploads[f]:>7}" for f in names]
        lines.append(f"{'total':<58} {self.total_ops:>5} {self.total_reads:>5} {self.total_uploads:>7}")
        return "\n".join(lines)


def _caller() -> str | None:
    """`module.function` of the innermost maskc frame, or None when Triton (its interpreter) is on the
    stack above it, or no maskc frame is."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/site-packages/triton/" in name:
            return None
        if name.startswith(OWN):
            module = Path(name).relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
            return f"{module}.{frame.f_code.co_name}"
        frame = frame.f_back
    return None


class _OpCounter(TorchDispatchMode):
    #: Watches only: `backends.triton.function` does not take this mode for a tracer.
    observer = True

    def __init__(self, counts: HostOps) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        caller = _caller()
        if caller is not None:
            name = func._schema.name
            self.counts.ops[caller] += 1
            if name == UPLOAD_OP:
                self.counts.uploads[caller] += 1
                self.counts.events.append((caller, name))
            if name in READ_OPS or (name in ("aten::_to_copy", "aten::copy_") and _to_host(args, kwargs)):
                self.counts.reads[caller] += 1
                self.counts.events.append((caller, name))
        return func(*args, **(kwargs or {}))


def _to_host(args: Any, kwargs: Any) -> bool:
    """Whether a copy goes from another device to the CPU (never, when everything runs on the CPU)."""
    target = (kwargs or {}).get("device")
    source = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if target is None and len(args) > 1 and isinstance(args[0], torch.Tensor) and isinstance(args[1], torch.Tensor):
        source, target = args[1], args[0].device  # copy_(dst, src)
    return source is not None and target is not None and torch.device(target).type == "cpu" != source.device.type


@contextlib.contextmanager
def _wrapped(owner: Any, names: tuple[str, ...], record: Callable[[str, str, tuple], None]) -> Iterator[None]:
    """owner.name for each name wrapped so that a call from maskc's code is recorded; restored after."""
    originals = {name: getattr(owner, name) for name in names}

    def wrap(name: str, original: Callable) -> Callable:
        def counted(*args: Any, **kwargs: Any) -> Any:
            caller = _caller()
            if caller is not None:
                record(caller, name, args)
            return original(*args, **kwargs)

        return counted

    try:
        for name, original in originals.items():
            setattr(owner, name, wrap(name, original))
        yield
    finally:
        for name, original in originals.items():
            setattr(owner, name, original)


@contextlib.contextmanager
def counting() -> Iterator[HostOps]:
    """Count what maskc's code does on the host inside the block (see the module's docstring)."""
    counts = HostOps()

    def read(caller: str, name: str, args: tuple) -> None:
        counts.reads[caller] += 1
        counts.events.append((caller, f"Tensor.{name}"))

    with _wrapped(torch.Tensor, READ_METHODS, read), _OpCounter(counts):
        yield counts


#: Document lengths of bench_runtime.py (issue 13), scaled to the case's n.
LENGTHS = (2381, 1211, 2568, 1799, 1174, 5864, 13954, 3817)


@dataclass
class RuntimeCase:
    """One run-time pattern of bench_runtime.py at a small n, with its inputs."""

    name: str
    pattern: Any
    documents: torch.Tensor | None
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor

    def call(self, backward: bool) -> None:
        import maskc

        leaves = [x.detach().clone().requires_grad_(backward) for x in (self.q, self.k, self.v)]
        out = maskc.attention(*leaves, self.pattern, backend="triton", documents=self.documents)
        if backward:
            out.sum().backward()

    def count(self, backward: bool) -> HostOps:
        """Counts of a call after a first one (which fills the plan's caches and loads the kernels)."""
        self.call(backward)
        with counting() as counts:
            self.call(backward)
        return counts


def scaled_documents(n: int) -> torch.Tensor:
    """(1, n) ids of LENGTHS scaled to n (each document at least one position)."""
    total = sum(LENGTHS)
    ends = [max(i + 1, round(sum(LENGTHS[: i + 1]) * n / total)) for i in range(len(LENGTHS))]
    ends[-1] = n
    starts = [0, *ends[:-1]]
    return torch.cat([torch.full((end - start,), i) for i, (start, end) in enumerate(zip(starts, ends))])[None]


def runtime_cases(
    n: int = 2048,
    block: int = 64,
    heads: int = 2,
    head_dim: int = 16,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[RuntimeCase]:
    """bench_runtime.py's cases at n (LSH for its clusters): windows scaled by n / 32768, top-k blocks of
    `block`."""
    import warnings

    import maskc
    from maskc.errors import MaskcWarning

    scale = n / 32768
    window, topk_window = max(2, round(1024 * scale)), max(2, round(512 * scale))
    specs = {
        "documents, document-causal": {"causal": True, "pattern": {"document": {}}},
        f"documents, causal window {window} inside each": {
            "causal": True,
            "pattern": {"intersect": [{"document": {}}, {"window": {"before": window - 1, "after": 0}}]},
        },
        f"top-k 16 (B={block}) + causal window {topk_window} + 4 sinks": {
            "causal": True,
            "block_size": block,
            "pattern": [
                {"window": {"before": topk_window - 1, "after": 0}},
                {"topk": {"blocks": 16}},
                {"sink": {"count": 4}},
            ],
        },
        "LSH, 16 buckets, causal (cluster order)": {
            "causal": True,
            "pattern": {"cluster": {"clusters": 16, "method": "lsh"}},
        },
    }
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, head_dim, generator=gen).to(device, dtype) for _ in range(3))
    cases = []
    for name, spec in specs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MaskcWarning)
            pattern = maskc.compile(
                maskc.Spec.model_validate({"name": "host", **spec}), seq_len=n, heads=heads, block_size=block
            )
        documents = scaled_documents(n).to(device) if "document" in str(spec) else None
        cases.append(RuntimeCase(name, pattern, documents, q, k, v))
    return cases
