"""The warp-specialised kernels' place in the backend (forward, dQ, dK/dV), on the CPU: which calls they
serve, and that the tuner offers them for those only (the kernels run on Hopper GPUs:
tests/gpu/test_forward_ws_gpu.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings

import pytest
import torch

pytest.importorskip("triton")

import maskc
from maskc.backends.triton import forward, tuning
from maskc.backends.triton.plans import plan_for
from maskc.backends.triton.span import Span

WINDOW = {"causal": True, "pattern": {"window": {"before": 99, "after": 0}}}


def _call(n: int = 256, dtype: torch.dtype = torch.bfloat16, head_dim: int = 64) -> tuple:
    pattern = maskc.compile(maskc.Spec(name="window", **WINDOW), seq_len=n, heads=2)
    q, k, v = (torch.zeros(1, 2, n, head_dim, dtype=dtype) for _ in range(3))
    return plan_for(pattern), q, k, v, Span.full(n)


def test_serves_full_length_16_bit_calls_on_whole_tiles() -> None:
    plan, q, k, v, span = _call()
    assert forward.ws_eligible(plan, q, k, v, span, going_on=False)


@pytest.mark.parametrize(
    "change, why",
    [
        ({"dtype": torch.float32}, "float32"),
        ({"head_dim": 96}, "a head dim other than 64 or 128"),
        ({"n": 200}, "n not a multiple of the 128-row tile"),
    ],
)
def test_does_not_serve(change: dict, why: str) -> None:
    plan, q, k, v, span = _call(**change)
    assert not forward.ws_eligible(plan, q, k, v, span, going_on=False), why


def test_does_not_serve_a_pass_going_on_or_strided_tensors() -> None:
    plan, q, k, v, span = _call()
    assert not forward.ws_eligible(plan, q, k, v, span, going_on=True)
    strided = torch.zeros(1, 256, 2, 64, dtype=torch.bfloat16).transpose(1, 2)  # (B, N, H, D) storage
    assert not forward.ws_eligible(plan, strided, k, v, span, going_on=False)


@pytest.mark.parametrize("kernel", ["forward", "dq", "dkdv"])
def test_candidates_join_for_served_calls_only(kernel: str) -> None:
    def served(dtype: torch.dtype = torch.bfloat16, tma: bool = True, ws: bool = True) -> bool:
        return any(c.ws for c in tuning.candidates(kernel, 128, dtype, (128, 128), tma, ws))

    assert served()
    assert not served(ws=False)
    assert not served(tma=False)
    assert not served(dtype=torch.float32)


@pytest.mark.parametrize("kernel", ["forward", "dq", "dkdv"])
def test_half_kind_kernels_stand_in_for_the_plain_ones_of_a_static_layout(kernel: str) -> None:
    """With `halves` (a static layout's call) each warp-specialised candidate without the overlap reads
    its halves' kinds, in place of its plain twin; the overlap forward stays; without, none does."""

    def space(halves: bool) -> list[tuning.KernelConfig]:
        return [c for c in tuning.candidates(kernel, 128, torch.bfloat16, (128, 128), True, True, halves) if c.ws]

    plain, halved = space(False), space(True)
    assert not any(c.halves for c in plain)
    assert [dataclasses.replace(c, halves=not c.overlap) for c in plain] == halved
    assert any(c.halves for c in halved)


def test_half_kinds_only_for_static_layouts_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tuner asks for the half-kind space when the call is warp-specialised and its layout static;
    a run-time layout (no halves' kinds) or MASKC_TRITON_HALF_KINDS=0 keeps the plain kernels."""
    asked: list[bool] = []
    original = tuning.candidates

    def candidates(*args):
        asked.append(args[-1])
        return original(*args)

    monkeypatch.setattr(tuning, "candidates", candidates)
    monkeypatch.setattr(tuning, "_CHOSEN", {})  # every choice asked afresh, none left for other tests
    monkeypatch.setattr(tuning, "has_tma", lambda device: True)
    monkeypatch.setattr(tuning, "ws_allowed", lambda: True)
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    static, q, _, _, _ = _call()
    run_time = plan_for(maskc.compile(maskc.Spec(name="documents", pattern={"document": {}}), seq_len=256, heads=2))
    for plan, setting in ((static, None), (run_time, None), (static, "0")):
        if setting is None:
            monkeypatch.delenv("MASKC_TRITON_HALF_KINDS", raising=False)
        else:
            monkeypatch.setenv("MASKC_TRITON_HALF_KINDS", setting)
        tuning.choose_config(plan, "forward", q, q, run=lambda config: None, ws=True)
    assert asked == [True, False, False]


def test_the_forward_times_both_walks_and_dkdv_splits_its_key_tiles() -> None:
    assert {c.overlap for c in tuning._WS[128]} == {False, True}
    # each of dK/dV's two computing partitions takes 64 keys of a tile (a compile-time assertion too)
    assert {c.block_n for c in tuning._WS_BACKWARD["dkdv"][128]} == {128}


def test_ws_off_leaves_every_warp_specialised_candidate_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """MASKC_TRITON_WS=0: the tuner's space has none, even for a call they serve on a Hopper."""
    monkeypatch.setattr(tuning, "has_tma", lambda device: True)
    monkeypatch.setattr(tuning, "gluon_written_for", lambda version: True)
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "1")
    plan, q, k, _, _ = _call()
    offered: list[tuning.KernelConfig] = []

    def timings(options: list[tuning.KernelConfig], run) -> dict[tuning.KernelConfig, float]:
        offered.extend(options)
        return {options[0]: 1.0}

    monkeypatch.setattr(tuning, "_timings", timings)
    try:
        for kernel in ("forward", "dq", "dkdv"):
            monkeypatch.setenv("MASKC_TRITON_WS", "0")
            tuning.choose_config(plan, kernel, q, k, lambda config: None, ws=True)
            assert offered and not any(c.ws for c in offered), kernel
            offered.clear()
            monkeypatch.setenv("MASKC_TRITON_WS", "1")
            tuning.choose_config(plan, kernel, q, k, lambda config: None, ws=True)
            assert any(c.ws for c in offered), kernel
            offered.clear()
    finally:
        tuning.forget_configs()


def test_tuner_drops_the_kernel_where_it_does_not_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a candidate list that puts it first (as the GPU tests force it) yields the next candidate."""
    plain = tuning.KernelConfig(128, 128, 8, 3)
    monkeypatch.setattr(tuning, "candidates", lambda *args, **kwargs: [tuning._WS[128][0], plain])
    monkeypatch.setenv("MASKC_TRITON_AUTOTUNE", "0")
    tuning.forget_configs()
    plan, q, k, _, _ = _call()
    try:
        assert tuning.choose_config(plan, "forward", q, k, lambda config: None, ws=False) == plain
        # on the CPU there are no tensor descriptors, so a served call cannot have it either
        assert tuning.choose_config(plan, "forward", q, k, lambda config: None, ws=True) == plain
    finally:
        tuning.forget_configs()


def test_a_triton_whose_gluon_they_are_not_written_for_leaves_them_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gluon changes between Triton releases: on another one the tuner offers only the Triton kernels,
    and says so once, instead of failing at the first compile on a Hopper."""
    import triton

    tuning.gluon_written_for.cache_clear()
    try:
        assert tuning.gluon_written_for("3.6.0")
        with pytest.warns(maskc.MaskcWarning, match="Triton 3.9.1"):
            assert not tuning.gluon_written_for("3.9.1")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not tuning.gluon_written_for("3.9.1")  # said once
        monkeypatch.setattr(triton, "__version__", "3.9.1")
        monkeypatch.setenv("MASKC_TRITON_WS", "1")
        assert not tuning.ws_allowed()
        monkeypatch.setattr(triton, "__version__", "3.6.0")
        assert tuning.ws_allowed()
    finally:
        tuning.gluon_written_for.cache_clear()


def test_the_kernel_modules_load_without_a_gpu() -> None:
    """In a fresh process without the interpreter (Gluon cannot load where Triton was first loaded for
    it, as in this test session)."""
    script = (
        "from maskc.backends.triton.kernels import kernel_module\n"
        "print(type(kernel_module('forward_ws', interpret=False).maskc_forward_ws).__name__)\n"
        "module = kernel_module('backward_ws', interpret=False)\n"
        "print(type(module.maskc_backward_dq_ws).__name__, type(module.maskc_backward_dkdv_ws).__name__)\n"
        "import torch\n"
        "from maskc.backends.triton.descriptors import gluon_term_descriptors\n"
        "lse, delta = gluon_term_descriptors((torch.zeros(2, 3, 256), torch.ones(2, 3, 256)), 64)\n"
        "print(lse.shape, lse.block_shape, bool(delta.base.eq(1).all()))\n"
        "from triton.experimental.gluon import language as gl\n"
        "from maskc.backends.triton.descriptors import gluon_row_descriptors\n"
        "x, y = torch.zeros(1, 2, 256, 64, dtype=torch.bfloat16), torch.zeros(1, 2, 256, 32, dtype=torch.float16)\n"
        "for _ in range(2):\n"
        "    a, b = gluon_row_descriptors((x, y), (128, 64))\n"
        "    made = (([128, 64], gl.bfloat16), ([64, 32], gl.float16))\n"
        "    fresh = [gl.NVMMASharedLayout.get_default_for(*shape) for shape in made]\n"
        "    print(a.layout == fresh[0], b.layout == fresh[1], a.layout != b.layout, a.block_shape, b.block_shape)\n"
        "print(gluon_row_descriptors((x.float(),), (64,)))"
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    *kernels, terms, first, again, float_rows = done.stdout.strip().split("\n")
    assert " ".join(kernels).split() == ["GluonJITFunction"] * 3
    # the row terms read as one vector in [64] pieces: (b, h)'s piece at c starts at (b · H + h) · N + c
    assert terms == "[1536] [64] True"
    # the shared layouts kept per block and type are the ones Gluon makes for them, in every call
    assert first == again == "True True True [128, 64] [64, 32]"
    assert float_rows == "None"  # the kernels' tiles are 16-bit


def test_row_terms_read_by_tma_only_when_contiguous_and_addressable() -> None:
    from maskc.backends.triton.descriptors import terms_readable

    assert terms_readable(torch.empty(2, 16, 4096, device="meta"))
    assert not terms_readable(torch.empty(2, 4096, 16, device="meta").transpose(1, 2))
    assert not terms_readable(torch.empty(8, 64, 2**22, device="meta"))  # 2³¹ elements
