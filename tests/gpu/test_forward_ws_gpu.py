"""The warp-specialised forward, dQ and dK/dV (kernels/forward_ws.py, backward_ws.py, Hopper) against
the float32 reference.

The tuner offers them only where they serve the call (`forward.ws_eligible`) and keeps them only
where they are faster, so the other GPU tests may never run them: here each comes first among its
kernel's candidates and runs untimed, on every catalogue spec and the run-time patterns, with each
of its configurations, and each test checks that it ran where the call is one it serves.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from test_runtime_gpu import SPECS as RUN_TIME_SPECS
from test_runtime_gpu import test_against_the_float32_reference
from test_triton_gpu import SPECS, _check, _layer_patterns

import maskc
from maskc.backends.triton import backward, forward, tables, tuning
from maskc.backends.triton.plans import plan_for
from maskc.errors import MaskcWarning

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9, reason="needs a Hopper GPU"
    ),
]


def _label(c: tuning.KernelConfig, d: int) -> str:
    """A forward configuration's test id ('halfkinds' where it reads its halves' kinds: `-k halfkinds`)."""
    kinds = ", halfkinds" if c.halves else ""
    return f"{c.block_m}x{c.block_n}, {c.num_stages} stages, overlap={c.overlap}{kinds}, D={d}"


CONFIGS = {
    _label(c, d): (c, d)
    for d in (64, 128)
    for c in tuning._WS[d][: None if d == 128 else 1] + tuning._WS_HALVES[d][: None if d == 128 else 1]
}
BACKWARD_CONFIGS = {
    f"{kernel} {c.block_m}x{c.block_n}, {c.num_stages} stages{', halfkinds' if c.halves else ''}, D={d}": (kernel, c, d)
    for kernel in ("dq", "dkdv")
    for d in (64, 128)
    for space in (tuning._WS_BACKWARD, tuning._WS_BACKWARD_HALVES)
    for c in space[kernel][d][: None if d == 128 else 1]
}
LAUNCHERS = {"dq": "launch_dq_ws", "dkdv": "launch_dkdv_ws"}


def _forced(monkeypatch: pytest.MonkeyPatch, kernel: str, config: tuning.KernelConfig, module, launcher: str) -> list:
    """`config` first among `kernel`'s candidates, untimed; the list of its launches through
    `module.launcher` (grows as they run), each call that `module`'s ws_eligible served as
    ("served", shape) first."""
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    original_candidates, original_launch = tuning.candidates, getattr(module, launcher)
    original_eligible = module.ws_eligible
    monkeypatch.setattr(
        tuning,
        "candidates",
        lambda name, *args: ([config] if name == kernel else []) + original_candidates(name, *args),
    )
    ran: list[tuple] = []

    def launch(plan, config, tensors, *args):
        ran.append((config, tuple(tensors[0].shape)))
        original_launch(plan, config, tensors, *args)

    def eligible(plan, q, *args, **kwargs):
        served = original_eligible(plan, q, *args, **kwargs)
        if served:
            ran.append(("served", tuple(q.shape)))
        return served

    monkeypatch.setattr(module, launcher, launch)
    monkeypatch.setattr(module, "ws_eligible", eligible)
    tuning.forget_configs()
    return ran


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> list[tuple]:
    """The warp-specialised forward configuration `request.param` first, untimed (`_forced`)."""
    ran = _forced(monkeypatch, "forward", CONFIGS[request.param][0], forward, "launch_forward_ws")
    yield ran
    tuning.forget_configs()


@pytest.fixture
def backward_launches(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> list[tuple]:
    """The warp-specialised dQ or dK/dV configuration `request.param` first, untimed (`_forced`)."""
    kernel, config, _ = BACKWARD_CONFIGS[request.param]
    ran = _forced(monkeypatch, kernel, config, backward, LAUNCHERS[kernel])
    yield ran
    tuning.forget_configs()


@pytest.mark.parametrize("launches", list(CONFIGS), indirect=True)
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec(launches: list[tuple], path: Path, request: pytest.FixtureRequest) -> None:
    """Every distinct layer pattern of every catalogue spec, bf16, GQA where heads allow, two batch
    elements; a grid spec at its grid's n, the others at n = 4096."""
    _, head_dim = CONFIGS[request.node.callspec.params["launches"]]
    n = None if maskc.load(path).grid is not None else 4096
    for pattern in _layer_patterns(path, n):
        _check(pattern, batch=2, kv_heads=max(1, pattern.heads // 2), head_dim=head_dim, dtype=torch.bfloat16)
    _assert_ran_where_served(launches)


def _assert_ran_where_served(launches: list[tuple]) -> None:
    served = [shape for kind, shape in launches if kind == "served"]
    ran = [shape for kind, shape in launches if kind != "served"]
    assert len(ran) >= len(served), f"served {len(served)} calls, ran {len(ran)}"


@pytest.mark.parametrize("launches", [name for name in CONFIGS if "128x128" in name and "D=128" in name], indirect=True)
@pytest.mark.parametrize("name", list(RUN_TIME_SPECS))
def test_run_time_patterns(launches: list[tuple], name: str) -> None:
    """Documents, top-k and clusters (tables built on the GPU per call), forward and gradients."""
    test_against_the_float32_reference(name)
    _assert_ran_where_served(launches)
    assert launches, "the warp-specialised forward served no call"


@pytest.mark.parametrize("launches", [next(iter(CONFIGS))], indirect=True)
def test_a_causal_window_at_length(launches: list[tuple]) -> None:
    """n = 32768 with more rows than programs (each program walks many rows), and an n of whole tiles
    that is not a power of two."""
    for n in (32768, 4096 + 128):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MaskcWarning)
            spec = maskc.Spec(name="window", causal=True, pattern={"window": {"before": 1023, "after": 0}})
            pattern = maskc.compile(spec, seq_len=n, heads=4)
        _check(pattern, batch=1, kv_heads=4, head_dim=64, dtype=torch.bfloat16)
    assert sum(kind != "served" for kind, _ in launches) == 2


@pytest.mark.parametrize("backward_launches", list(BACKWARD_CONFIGS), indirect=True)
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_backward(backward_launches: list[tuple], path: Path, request: pytest.FixtureRequest) -> None:
    """The warp-specialised dQ or dK/dV on every catalogue spec, as test_every_spec runs the forward
    (GQA: dK/dV sums each key tile's gradients over its group's query heads)."""
    _, _, head_dim = BACKWARD_CONFIGS[request.node.callspec.params["backward_launches"]]
    n = None if maskc.load(path).grid is not None else 4096
    for pattern in _layer_patterns(path, n):
        _check(pattern, batch=2, kv_heads=max(1, pattern.heads // 2), head_dim=head_dim, dtype=torch.bfloat16)
    _assert_ran_where_served(backward_launches)


@pytest.mark.parametrize("backward_launches", [name for name in BACKWARD_CONFIGS if "D=128" in name], indirect=True)
@pytest.mark.parametrize("name", list(RUN_TIME_SPECS))
def test_run_time_patterns_backward(backward_launches: list[tuple], name: str) -> None:
    """The warp-specialised dQ or dK/dV on documents, top-k and clusters."""
    test_against_the_float32_reference(name)
    _assert_ran_where_served(backward_launches)
    assert backward_launches, "the warp-specialised kernel served no call"


#: Patterns with a long row and column (a global token's), split into chunks of `CHUNK_TILES` tiles.
LONG_LINES = {
    "longformer": {"pattern": [{"window": {"before": 256, "after": 256}}, {"global": {"tokens": [0]}}]},
    "bigbird": "specs/bigbird.yaml",
}
CHUNK_TILES = 3


def _long_lines_checked(
    monkeypatch: pytest.MonkeyPatch, walk: str, config: tuning.KernelConfig, launches: list[tuple]
) -> None:
    """Each of LONG_LINES at n = 4096, GQA, a batch of two, its long lines as chunks of CHUNK_TILES
    tiles (asserted on `walk`'s tables at `config`'s tile shape), against the reference; each pattern
    ran the forced Gluon kernel (`launches`, as `_forced` records them)."""
    monkeypatch.setattr(tables, "CHUNK_TILES", CHUNK_TILES)
    for name, spec in LONG_LINES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MaskcWarning)
            source = maskc.Spec(name=name, **spec) if isinstance(spec, dict) else spec
            pattern = maskc.compile(source, seq_len=4096, heads=4, schedule="single")
        split = plan_for(pattern).tables(walk, config.block_m, config.block_n, torch.device("cuda")).split
        assert split, f"{name}: the {walk} were not split"
        ran = sum(kind != "served" for kind, _ in launches)
        _check(pattern, batch=2, kv_heads=2, head_dim=128, dtype=torch.bfloat16)
        assert sum(kind != "served" for kind, _ in launches) > ran, f"{name}: the Gluon kernel did not run"


@pytest.mark.parametrize("launches", [name for name in CONFIGS if "D=128" in name], indirect=True)
def test_long_rows_as_chunks(
    launches: list[tuple], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The forward walks a long row as chunks, each a work item writing its partial, merged after."""
    config, _ = CONFIGS[request.node.callspec.params["launches"]]
    _long_lines_checked(monkeypatch, "rows", config, launches)
    _assert_ran_where_served(launches)
    assert launches, "the warp-specialised forward served no call"


@pytest.mark.parametrize("backward_launches", [name for name in BACKWARD_CONFIGS if "D=128" in name], indirect=True)
def test_long_lines_as_chunks_backward(
    backward_launches: list[tuple], monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """dQ walks a long row, dK/dV a long column, as chunks whose partials are summed after."""
    kernel, config, _ = BACKWARD_CONFIGS[request.node.callspec.params["backward_launches"]]
    _long_lines_checked(monkeypatch, "rows" if kernel == "dq" else "columns", config, backward_launches)
    _assert_ran_where_served(backward_launches)
    assert backward_launches, "the warp-specialised kernel served no call"
