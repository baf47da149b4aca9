"""The Triton tuner on the CPU: it keeps the fastest candidate, remembers it per problem, records every
candidate's time for the benchmarks, and skips candidates that do not fit the GPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton")
import triton.testing
from triton.runtime.errors import OutOfResources

from maskc.backends.triton import tuning
from maskc.backends.triton.tuning import KernelConfig

FAST = KernelConfig(64, 128, 8, 3, tma=True)
SLOW = KernelConfig(128, 64, 8, 3)
TOO_BIG = KernelConfig(128, 128, 8, 4)
COST = {FAST: 1.0, SLOW: 2.5}


@pytest.fixture
def tuner(monkeypatch: pytest.MonkeyPatch):
    """The tuner with three candidates and a fake clock: each candidate's run reports its cost."""
    ran: list[KernelConfig] = []

    def fake_bench(step, **_: object) -> float:
        step()
        if ran[-1] is TOO_BIG:
            raise OutOfResources(300000, 232448, "shared memory")
        return COST[ran[-1]]

    monkeypatch.setattr(tuning, "candidates", lambda *args, **kwargs: [SLOW, FAST, TOO_BIG])
    monkeypatch.setattr(triton.testing, "do_bench", fake_bench)
    tuning.forget_configs()
    yield ran
    tuning.forget_configs()


def choose(ran: list[KernelConfig], n: int = 4096) -> KernelConfig:
    plan = SimpleNamespace(tune_key=("spec", "masks", (64, 64), n), native_tile=(64, 64))
    q = torch.zeros(1, 2, n, 64)
    return tuning.choose_config(plan, "dkdv", q, q, ran.append)


def test_the_fastest_candidate_is_kept_and_every_time_recorded(tuner: list[KernelConfig]) -> None:
    assert choose(tuner) == FAST
    (timings,) = tuning.tuning_timings().values()
    assert timings == {FAST: 1.0, SLOW: 2.5}  # the candidate that did not fit is left out
    assert set(tuner) == {FAST, SLOW, TOO_BIG}


def test_a_problem_is_timed_once_and_forgotten_on_request(tuner: list[KernelConfig]) -> None:
    choose(tuner)
    runs = len(tuner)
    assert choose(tuner) == FAST and len(tuner) == runs
    choose(tuner, n=8192)  # another problem: timed again
    assert len(tuner) == 2 * runs and len(tuning.tuning_timings()) == 2
    tuning.forget_configs()
    assert tuning.tuning_timings() == {} and tuning.chosen_configs() == {}


def test_near_equal_candidates_are_timed_in_turns_and_given_their_median(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first round that a drifting clock misorders (AHEAD looks fastest, then is slower twice) does
    not decide: the candidates within CLOSE of the fastest are timed again, each round reversed, and
    the median picks; a candidate far behind is timed once."""
    ahead, behind, far = FAST, SLOW, KernelConfig(32, 64, 4, 3)
    clock = {ahead: iter([1.00, 1.08, 1.07]), behind: iter([1.05, 1.00, 1.01]), far: iter([1.5])}
    order: list[KernelConfig] = []

    def fake_bench(step, **_: object) -> float:
        step()
        return next(clock[order[-1]])

    monkeypatch.setattr(triton.testing, "do_bench", fake_bench)
    timings = tuning._timings([ahead, behind, far], order.append)
    assert timings == {ahead: 1.07, behind: 1.01, far: 1.5}
    assert min(timings, key=timings.get) == behind
    assert order == [ahead, behind, far, behind, ahead, ahead, behind]


def test_a_lone_fastest_candidate_is_timed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[KernelConfig] = []
    monkeypatch.setattr(triton.testing, "do_bench", lambda step, **_: step() or COST[order[-1]])
    assert tuning._timings([SLOW, FAST], order.append) == {SLOW: 2.5, FAST: 1.0}
    assert order == [SLOW, FAST]
