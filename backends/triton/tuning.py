"""Kernel configurations: a small space per kernel, head dim and dtype, timed once per problem.

A configuration fixes the tile shape (BLOCK_M query rows × BLOCK_N keys, which is also the IR tile
shape the pattern is laid out on), the warps per program and the software-pipelining depth. The
spaces hold shapes that fit block-64 patterns (64-wide key tiles) and the usual 128-row tiles. On a
GPU the first call of a problem times every candidate on the real inputs and keeps the fastest
(those close to the fastest timed again, in turns: `_timings`); under the interpreter the pattern's
own tile shape runs, one warp group, no pipelining. MASKC_TRITON_AUTOTUNE=0 takes the first
candidate without timing; MASKC_TRITON_TMA=0 leaves the tensor-descriptor (TMA) variants out, and
with them the warp-specialised kernels (Hopper, kernels/forward_ws.py and backward_ws.py), which
MASKC_TRITON_WS=0 leaves out alone; MASKC_TRITON_ATOMIC_DQ=1 adds the dK/dV variants that compute dQ
with atomics (not under torch's deterministic algorithms). Those lost by 30–47 % on every pattern
measured on an H200 (bench/NOTES.md), so by default they cost no tuning time.
For a static layout the warp-specialised kernels that read their halves' kinds (`KernelConfig.halves`)
stand in for the plain ones without the overlap: on an H200 no comparison found them more than 2 %
slower, and most found them faster (bench/NOTES.md). MASKC_TRITON_HALF_KINDS=0 brings the plain ones
back.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from maskc.errors import MaskcWarning

from .cache import interpreting
from .plan import Plan

Kernel = Literal["forward", "dkdv", "dq"]


@dataclass(frozen=True)
class KernelConfig:
    """Tile shape (query rows × keys per tile), warps per program, pipeline stages, and whether the
    walked tiles load through tensor descriptors (TMA: Hopper, whole-tile calls; descriptors.py)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    tma: bool = False
    #: dK/dV only: the kernel also adds each tile's dQ to a float32 accumulator with atomics, and
    #: the dQ kernel is not launched (kernels/backward.py).
    atomic_dq: bool = False
    #: the warp-specialised persistent kernels (kernels/forward_ws.py, backward_ws.py);
    #: num_warps is then each of its partitions' (one warp group), num_stages the depth of the ring
    #: of walked tiles (key and value tiles; for dK/dV query and dO tiles);
    #: `overlap` (forward): its walk computes a tile's scores while the tile before it multiplies the
    #: values.
    ws: bool = False
    overlap: bool = False
    #: (the warp-specialised kernels; the forward without overlap): each computing partition reads its
    #: half's kind of each partial tile, skipping an empty half and running a full one without the
    #: predicate (static layouts; `tables.half_kinds`).
    halves: bool = False


#: Candidates for 16-bit inputs by kernel and largest head dim; dK/dV's BLOCK_N is its keys per
#: program, BLOCK_M the query rows of one step. ptxas (sm_90) reports no spills for them except
#: dK/dV 64 × 128 at head dim 128 (a 40–56-byte stack, loads from it in the tile loops), kept
#: because it is still the fastest at some sizes (bench/NOTES.md).
_HALF: dict[Kernel, dict[int, list[KernelConfig]]] = {
    "forward": {
        64: [KernelConfig(128, 64, 4, 3), KernelConfig(128, 128, 8, 3), KernelConfig(64, 64, 4, 3)],
        128: [KernelConfig(128, 64, 8, 3), KernelConfig(128, 128, 8, 3), KernelConfig(64, 64, 4, 3)],
        256: [KernelConfig(128, 64, 8, 2), KernelConfig(64, 64, 4, 2)],
    },
    "dkdv": {
        64: [KernelConfig(64, 128, 8, 3), KernelConfig(32, 64, 4, 3), KernelConfig(64, 64, 4, 3)],
        128: [
            KernelConfig(64, 128, 8, 3),
            KernelConfig(64, 128, 8, 4),
            KernelConfig(32, 128, 8, 3),
            KernelConfig(32, 64, 4, 3),
        ],
        256: [KernelConfig(32, 32, 8, 2), KernelConfig(16, 32, 4, 2)],
    },
    "dq": {
        64: [KernelConfig(128, 64, 8, 3), KernelConfig(64, 64, 4, 3)],
        128: [KernelConfig(128, 64, 8, 3), KernelConfig(128, 32, 8, 3), KernelConfig(64, 64, 4, 3)],
        256: [KernelConfig(64, 32, 4, 2), KernelConfig(64, 64, 8, 2)],
    },
}
#: Candidates added on Hopper: the tiles a kernel walks (keys and values; queries and dO for dK/dV)
#: through tensor descriptors (TMA), on the shapes the pointer-load tuning picked most.
_TMA: dict[Kernel, dict[int, list[KernelConfig]]] = {
    "forward": {
        64: [KernelConfig(128, 64, 4, 3, tma=True), KernelConfig(128, 128, 8, 3, tma=True)],
        128: [
            KernelConfig(128, 64, 8, 3, tma=True),
            KernelConfig(128, 128, 8, 3, tma=True),
            KernelConfig(64, 64, 4, 3, tma=True),
        ],
        256: [],
    },
    "dkdv": {
        64: [KernelConfig(64, 128, 8, 3, tma=True), KernelConfig(32, 64, 4, 3, tma=True)],
        128: [KernelConfig(64, 128, 8, 3, tma=True), KernelConfig(32, 64, 4, 3, tma=True)],
        256: [],
    },
    "dq": {
        64: [KernelConfig(128, 64, 8, 3, tma=True), KernelConfig(64, 64, 4, 3, tma=True)],
        128: [KernelConfig(128, 64, 8, 3, tma=True), KernelConfig(64, 64, 4, 3, tma=True)],
        256: [],
    },
}
#: Forward candidates added on Hopper for the calls the warp-specialised kernel serves
#: (`forward.ws_eligible`): 128-row tiles; at head dim 128 two shared buffers of 128-key tiles (three
#: would pass the shared memory) or four of 64-key ones (229,832 of 232,448 bytes; BigBird's forward
#: 4-7 % faster than with three, bench/NOTES.md), three of either at 64.
_WS: dict[int, list[KernelConfig]] = {
    dim: [
        KernelConfig(128, block_n, 4, stages, tma=True, ws=True, overlap=overlap)
        for block_n, stages in ((128, 2 if dim == 128 else 3), (64, 4 if dim == 128 else 3))
        for overlap in (False, True)
    ]
    for dim in (64, 128)
} | {256: []}
#: The warp-specialised forward reading its halves' kinds (`KernelConfig.halves`), on the shapes of `_WS`
#: without overlap: for a static layout they take those shapes' places in the tuning (`candidates`). A
#: run-time layout has no halves' kinds, so it keeps the plain kernels.
_WS_HALVES: dict[int, list[KernelConfig]] = {
    dim: [dataclasses.replace(config, halves=True) for config in _WS[dim] if not config.overlap] for dim in (64, 128)
} | {256: []}
#: dQ and dK/dV candidates of the warp-specialised kind (kernels/backward_ws.py), for the calls the
#: forward's serve. dQ: 128-row query tiles, 64-key tiles, two or three stages (a query and a dO
#: tile per slot). dK/dV: 128-key tiles (64 per computing partition), 64-row query tiles, two or
#: three stages of query and dO tiles (three take 224 KB of shared memory at head dim 128).
_WS_BACKWARD: dict[Kernel, dict[int, list[KernelConfig]]] = {
    "dq": {dim: [KernelConfig(128, 64, 4, stages, tma=True, ws=True) for stages in (2, 3)] for dim in (64, 128)},
    "dkdv": {dim: [KernelConfig(64, 128, 4, stages, tma=True, ws=True) for stages in (2, 3)] for dim in (64, 128)},
}
#: dQ and dK/dV reading their halves' kinds (dQ: halves of its query tiles' rows; dK/dV: of its key
#: tiles), in place of `_WS_BACKWARD` where `_WS_HALVES` stand in for the forward's.
_WS_BACKWARD_HALVES: dict[Kernel, dict[int, list[KernelConfig]]] = {
    kernel: {dim: [dataclasses.replace(c, halves=True) for c in configs] for dim, configs in by_dim.items()}
    for kernel, by_dim in _WS_BACKWARD.items()
}
#: dK/dV candidates that compute dQ too, with atomics (not under deterministic algorithms); TMA ones
#: join on Hopper. At head dim 128 only 32-row steps compile without spills (sm_90, ptxas: 64 × 128
#: with 8 warps needs 255 registers and a 56–208-byte stack).
_ATOMIC_DQ: dict[int, list[KernelConfig]] = {
    64: [KernelConfig(64, 128, 8, 3, atomic_dq=True), KernelConfig(32, 64, 4, 3, atomic_dq=True)],
    128: [KernelConfig(32, 128, 8, 3, atomic_dq=True), KernelConfig(32, 64, 4, 3, atomic_dq=True)],
    256: [],
}
#: float32 tiles take twice the shared memory: smaller shapes, fewer stages, for every kernel.
_SINGLE: dict[int, list[KernelConfig]] = {
    64: [KernelConfig(64, 64, 4, 2), KernelConfig(32, 32, 4, 2)],
    128: [KernelConfig(32, 32, 4, 2)],
    256: [KernelConfig(16, 32, 4, 2)],
}

#: Chosen configurations by problem, shared by every pattern with the same values (spec hash).
_CHOSEN: dict[tuple, KernelConfig] = {}
#: Each timed candidate's median milliseconds, by problem (benchmarks print them).
_TIMINGS: dict[tuple, dict[KernelConfig, float]] = {}


def dot_precision(dtype: torch.dtype) -> str:
    """float32 products in full precision (the reference tolerance), not TF32."""
    return "ieee" if dtype == torch.float32 else "tf32"


def candidates(
    kernel: Kernel,
    head_dim: int,
    dtype: torch.dtype,
    native: tuple[int, int],
    tma: bool = False,
    ws: bool = False,
    halves: bool = False,
) -> list[KernelConfig]:
    """The configurations to try; under the interpreter only the pattern's own tile shape. `tma`: the
    device has tensor descriptors (Hopper), so the descriptor variants join; `ws`: the call is one the
    warp-specialised forward serves, whose candidates join too; `halves`: those without the overlap
    read their halves' kinds (a static layout's)."""
    if interpreting():
        return [KernelConfig(native[0], native[1], 4, 1)]
    size = next(size for size in (64, 128, 256) if head_dim <= size)
    if dtype == torch.float32:
        return list(_SINGLE[size])
    found = _HALF[kernel][size] + (_TMA[kernel][size] if tma else [])
    if kernel == "forward" and tma and ws:
        found += [dataclasses.replace(c, halves=True) if halves and not c.overlap else c for c in _WS[size]]
    if kernel in _WS_BACKWARD and tma and ws:
        found += (_WS_BACKWARD_HALVES if halves else _WS_BACKWARD)[kernel].get(size, [])
    if kernel == "dkdv" and atomic_dq_allowed():
        atomic = _ATOMIC_DQ[size]
        found += atomic + ([dataclasses.replace(c, tma=True) for c in atomic] if tma else [])
    return found


def as_variant(configs: list[KernelConfig], kernel: Kernel, **variant: bool) -> list[KernelConfig]:
    """`configs` with `variant` set (`tma` for every kernel, `atomic_dq` for dK/dV only): how the
    offline compile and the interpreter tests force a variant the tuner would only time on a GPU."""
    wanted = {key: value for key, value in variant.items() if key == "tma" or kernel == "dkdv"}
    return [dataclasses.replace(c, **wanted) for c in configs]


def half_kinds_allowed() -> bool:
    """Whether the half-kind kernels stand in for the plain warp-specialised ones (a static layout's
    calls): unless MASKC_TRITON_HALF_KINDS=0, which keeps the plain ones to compare against."""
    return os.environ.get("MASKC_TRITON_HALF_KINDS", "1") != "0"


def atomic_dq_allowed() -> bool:
    """Whether dK/dV candidates may compute dQ with atomics: only with MASKC_TRITON_ATOMIC_DQ=1, and not
    when torch is asked for deterministic algorithms (the float32 additions' order varies)."""
    if torch.are_deterministic_algorithms_enabled():
        return False
    return os.environ.get("MASKC_TRITON_ATOMIC_DQ", "0") == "1"


#: The Triton releases whose Gluon the warp-specialised kernels are written for. Gluon is
#: experimental and changes between releases (3.9 has renamed `thread_barrier` to `barrier` and
#: removed `tma.async_copy_global_to_shared` for `async_load`), so on others they stay out.
GLUON_RELEASES = ("3.6",)


def ws_allowed() -> bool:
    """Whether the warp-specialised kernels may join the tuning: MASKC_TRITON_WS=0 leaves them out, and
    so does a Triton whose Gluon they are not written for (`GLUON_RELEASES`; a warning says so once)."""
    if os.environ.get("MASKC_TRITON_WS", "1") == "0":
        return False
    import triton

    return gluon_written_for(triton.__version__)


@functools.cache
def gluon_written_for(version: str) -> bool:
    """Whether Triton `version` is one of GLUON_RELEASES; warns once per process when it is not."""
    if version.startswith(tuple(f"{release}." for release in GLUON_RELEASES)):
        return True
    warnings.warn(
        f"maskc's warp-specialised Hopper kernels are written for the Gluon of Triton "
        f"{', '.join(GLUON_RELEASES)}; with Triton {version} the Triton kernels run instead (slower on "
        "bands and documents; bench/NOTES.md)",
        MaskcWarning,
        stacklevel=2,
    )
    return False


def has_tma(device: torch.device) -> bool:
    """Whether kernels on `device` may load through tensor descriptors (CUDA, compute capability 9+),
    unless MASKC_TRITON_TMA=0 leaves them out of the tuning space."""
    if os.environ.get("MASKC_TRITON_TMA", "1") == "0":
        return False
    found = _HOPPER.get(device)
    if found is None:
        found = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9
        if device.index is not None or device.type != "cuda":  # "cuda" alone names whichever is current
            _HOPPER[device] = found
    return found


#: Whether a device is Hopper or newer, by device (asked once: every launch's tuning key needs it).
_HOPPER: dict[torch.device, bool] = {}


def choose_config(
    plan: Plan,
    kernel: Kernel,
    q: torch.Tensor,
    k: torch.Tensor,
    run: Callable[[KernelConfig], None],
    ws: bool = False,
) -> KernelConfig:
    """The fastest candidate for this problem, timed with `run` on the first call, then remembered
    (`ws`: the call is one the warp-specialised kernels serve)."""
    tma = has_tma(q.device) and not plan.mapped  # rows read in place by pointers: no descriptor tiles
    ws = ws and tma and ws_allowed()
    # the spaces that the call, environment and torch settings open or close
    halves = ws and half_kinds_allowed() and not plan.run_time  # a run-time layout has no halves' kinds
    spaces = (tma, atomic_dq_allowed(), ws, halves)
    key = (plan.tune_key, kernel, q.shape, k.shape[1], k.shape[-1], q.dtype, q.device, *spaces)
    chosen = _CHOSEN.get(key)
    if chosen is None:
        options = candidates(kernel, max(q.shape[-1], k.shape[-1]), q.dtype, plan.native_tile, tma, ws, halves)
        options = [config for config in options if ws or not config.ws]  # also when a caller forces some
        if len(options) == 1 or os.environ.get("MASKC_TRITON_AUTOTUNE", "1") == "0":
            chosen = options[0]
        else:
            _TIMINGS[key] = _timings(options, run)
            chosen = min(_TIMINGS[key], key=_TIMINGS[key].get)
        _CHOSEN[key] = chosen
    return chosen


def chosen_configs() -> dict[tuple, KernelConfig]:
    """What the tuner picked so far, by problem (benchmarks print it)."""
    return dict(_CHOSEN)


def tuning_timings() -> dict[tuple, dict[KernelConfig, float]]:
    """Every timed candidate's median ms, by problem, as the tuner measured them (benchmarks print it)."""
    return {key: dict(timings) for key, timings in _TIMINGS.items()}


def forget_configs() -> None:
    """Tune every problem again on its next call (benchmarks comparing tuning spaces in one process)."""
    _CHOSEN.clear()
    _TIMINGS.clear()


#: Rounds of timing for the candidates close to the fastest, and how close (a factor of the
#: fastest's first-round time). Timings of one kernel drift by several per cent within a process
#: (the GPU's clock, its other work); near-equal candidates timed once each, one after the other,
#: were picked by that drift (bench/NOTES.md, "The tuner's picks").
ROUNDS = 3
CLOSE = 1.10


def _timings(options: list[KernelConfig], run: Callable[[KernelConfig], None]) -> dict[KernelConfig, float]:
    """Median ms of each candidate that fits the GPU: every candidate timed once, then those within
    CLOSE of the fastest timed in ROUNDS − 1 more rounds, each round in the reverse order of the
    one before (a steady drift then falls on all of them alike), and given the median of their rounds."""
    from triton.runtime.errors import OutOfResources
    from triton.testing import do_bench

    def timed(config: KernelConfig) -> float:
        return do_bench(lambda: run(config), warmup=10, rep=40, return_mode="median")

    rounds: dict[KernelConfig, list[float]] = {}
    for config in options:
        try:
            rounds[config] = [timed(config)]
        except OutOfResources:
            continue
    if not rounds:
        raise RuntimeError(f"no kernel configuration fits this GPU: tried {options}")
    fastest = min(times[0] for times in rounds.values())
    close = [config for config, times in rounds.items() if times[0] <= CLOSE * fastest]
    if len(close) > 1:
        for turn in range(1, ROUNDS):
            for config in close[::-1] if turn % 2 else close:
                rounds[config].append(timed(config))
    return {config: statistics.median(times) for config, times in rounds.items()}
