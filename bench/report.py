"""Markdown tables for the benchmarks' summaries (pasted into RESULTS.md as printed), a profiled step,
and the rows' JSON file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """`rows` under `header`; `align` gives one letter per column, "r" right-aligned (numbers), any
    other left; left out, every column is left as markdown's default."""
    rules = [("---:" if a == "r" else "---") for a in align.ljust(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


#: Rows that earlier processes wrote to each $OUT file, read once per process.
_EARLIER: dict[str, list[dict[str, Any]]] = {}


def save_rows(name: str, rows: list[dict[str, Any]]) -> None:
    """`rows` to $OUT/`name` (when OUT is set), after the rows that earlier processes wrote there:
    run_gpu.sh runs cases one per process into one $OUT, and each would overwrite the last (so give
    each run its own OUT). Written whole to a temporary file, then renamed: a process killed by its
    time limit leaves the last complete file. An unreadable earlier file is kept as `name`.unreadable."""
    out = os.environ.get("OUT")
    if not out:
        return
    path = Path(out, name)
    if name not in _EARLIER:
        _EARLIER[name] = _earlier_rows(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_EARLIER[name] + rows, indent=1))
    os.replace(partial, path)


def _earlier_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text()))
    except (ValueError, TypeError):
        path.replace(path.with_name(path.name + ".unreadable"))
        print(f"{path}: not a JSON list of rows; kept as {path.name}.unreadable, starting a new one", flush=True)
        return []


def profile_step(step: Callable[[], None], label: str, rows: int = 18) -> None:
    """One step under torch.profiler: its busiest device operations, printed under `label`."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    table = prof.key_averages().table(sort_by="device_time_total", row_limit=rows, max_name_column_width=60)
    print(f"== profile: {label}\n{table}", flush=True)


def profile_forward(call: Callable, q, k, v, label: str) -> None:
    """With MASKC_BENCH_PROFILE=1, one forward of `call` without autograd profiled (profile_step)."""
    if os.environ.get("MASKC_BENCH_PROFILE") != "1":
        return
    import torch

    with torch.no_grad():
        call(q, k, v)
        profile_step(lambda: call(q, k, v), f"{label}, forward")


def profile_fwd_bwd(call: Callable, q, k, v, label: str) -> None:
    """With MASKC_BENCH_PROFILE=1, one forward+backward of `call` profiled (profile_step)."""
    if os.environ.get("MASKC_BENCH_PROFILE") != "1":
        return
    grad = None

    def step() -> None:
        nonlocal grad
        out = call(q, k, v)
        grad = grad if grad is not None else out.detach().clone().normal_()
        out.backward(grad)

    step()
    profile_step(step, label)


def tuner_picks(spec_hash: str, n: int) -> tuple[dict[str, dict], dict[str, list[list]]]:
    """What the Triton tuner chose for a pattern (spec hash) at length n, by kernel, and every
    candidate's median ms as it timed them, fastest first (dK/dV's include the dQ kernel it needs)."""
    from maskc.backends.triton.tuning import chosen_configs, tuning_timings

    def ours(key: tuple) -> bool:
        return key[0][0] == spec_hash and key[0][3] == n

    chosen = {key[1]: vars(config) for key, config in chosen_configs().items() if ours(key)}
    timed = {
        key[1]: sorted(([_label(config), round(ms, 3)] for config, ms in timings.items()), key=lambda t: t[1])
        for key, timings in tuning_timings().items()
        if ours(key)
    }
    return chosen, timed


def _label(config) -> str:
    """A kernel configuration as '64x128 w8 s3 tma atomic-dq' ('ws': a warp-specialised Gluon kernel)."""
    switches = (
        ("tma", config.tma), ("atomic-dq", config.atomic_dq), ("ws", config.ws), ("overlap", config.overlap),
        ("halves", config.halves),
    )  # fmt: skip
    flags = [name for name, on in switches if on]
    return " ".join([f"{config.block_m}x{config.block_n} w{config.num_warps} s{config.num_stages}", *flags])
