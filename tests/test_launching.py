"""The launch memory's argument signatures (backends/triton/launching.py) against Triton's own
specialisation: two arguments of one signature must always specialise alike, or a remembered
compiled kernel would run for a call Triton would have compiled differently. Triton's
`native_specialize_impl` is the reference; hypothesis draws the arguments the kernels take (tensors
at every alignment, integers about Triton's boundaries, flags, scales, constants, tuples, tensor
descriptors). The launches themselves run on the GPU (tests/gpu/test_launching_gpu.py)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maskc.backends.triton import launching

specialize = pytest.importorskip("triton.runtime.jit").native_specialize_impl
BaseBackend = pytest.importorskip("triton.backends.compiler").BaseBackend
tl = pytest.importorskip("triton.language")

with pytest.MonkeyPatch.context() as interpreted:  # triton.language is imported for the interpreter here
    interpreted.setenv("TRITON_INTERPRET", "1")
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    from triton.tools.tensor_descriptor import TensorDescriptor as TritonDescriptor

    launching.know_triton_types()

BUFFER = torch.zeros(64, dtype=torch.float32)
INTEGERS = [0, 1, 2, 15, 16, 17, 32, -1, -16, 2**31 - 16, 2**31 - 1, 2**31, 2**32, 2**63 - 16, 2**63, 2**64 - 16]


def _tensors() -> st.SearchStrategy:
    dtypes = st.sampled_from([torch.float32, torch.bfloat16, torch.int32, torch.int8])
    return st.builds(lambda dtype, offset: BUFFER.view(dtype)[offset:], dtypes, st.integers(0, 9))


def _triton_descriptors() -> st.SearchStrategy:
    def make(dtype: torch.dtype, block: int) -> Any:
        return TritonDescriptor(torch.zeros(256, 64, dtype=dtype), [256, 64], [64, 1], [block, 64])

    return st.builds(make, st.sampled_from([torch.bfloat16, torch.float32]), st.sampled_from([32, 64]))


def _descriptors() -> st.SearchStrategy:
    def make(dtype: torch.dtype, rows: int, block: int) -> Any:
        x = torch.zeros(rows, 64, dtype=dtype)
        element = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16}[dtype]
        layout = gl.NVMMASharedLayout.get_default_for([block, 64], element)
        return TensorDescriptor(x, [rows, 64], [64, 1], [block, 64], layout)

    return st.builds(make, st.sampled_from([torch.bfloat16, torch.float16]), st.sampled_from([64, 128]),
                     st.sampled_from([64, 128]))  # fmt: skip


def _arguments() -> st.SearchStrategy:
    leaves = st.one_of(
        _tensors(),
        st.sampled_from(INTEGERS),
        st.booleans(),
        st.floats(allow_nan=False, width=32),
        st.none(),
        st.builds(tl.constexpr, st.sampled_from([0, 1, 16, 64, True, None])),
        _descriptors(),
        _triton_descriptors(),
    )
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=5)


def _triton(arg: Any) -> Any:
    """Triton's specialisation of `arg` as a parameter that specialises (the default), and as a
    `tl.constexpr` parameter (by value; tensors and descriptors are never constants)."""
    kind, key = specialize(BaseBackend, arg, False, True, True)
    return (kind, str(key)), _constant(arg)


def _constant(arg: Any) -> Any:
    if isinstance(arg, tuple):
        return tuple(_constant(item) for item in arg)
    if isinstance(arg, tl.constexpr):
        return _constant(arg.value)
    if isinstance(arg, (torch.Tensor, TensorDescriptor, TritonDescriptor)):
        return None
    return type(arg), arg


@settings(max_examples=300, deadline=None)
@given(st.lists(_arguments(), min_size=10, max_size=40))
def test_one_signature_never_covers_two_specialisations(arguments: list[Any]) -> None:
    seen: dict[Any, Any] = {}
    for arg in arguments:
        assert seen.setdefault(launching.signature(arg), _triton(arg)) == _triton(arg), arg


def _calls() -> st.SearchStrategy:
    """(positional arguments, keyword arguments) of a launch, from small alphabets so that keys meet."""
    small = st.one_of(st.sampled_from([0, 1, 16, True, False, 0.5, None]), _tensors(),
                      st.lists(st.sampled_from([1, 2, True]), max_size=3).map(tuple))  # fmt: skip
    return st.tuples(st.lists(small, max_size=4).map(tuple), st.dictionaries(st.sampled_from("ABC"), small, max_size=2))


@settings(max_examples=300, deadline=None)
@given(st.lists(_calls(), min_size=10, max_size=30))
def test_one_launch_key_never_covers_two_bindings(calls: list[tuple[tuple, dict]]) -> None:
    """Whole launches: a key shared by two calls means the same arguments position by position and
    the same keywords, each specialised alike (a flat key whose parts ran together, e.g. ((1, 2), 3)
    and ((1, 2, 3),) or A=1 and B=1, would fail)."""

    def binding(args: tuple, kwargs: dict) -> Any:
        return [_triton(a) for a in args], sorted((name, _triton(v)) for name, v in kwargs.items())

    seen: dict[Any, Any] = {}
    for args, kwargs in calls:
        key = launching.call_key(0, args, dict(sorted(kwargs.items())))
        assert seen.setdefault(key, binding(args, kwargs)) == binding(args, kwargs), (args, kwargs)


def test_keys_keep_tuple_lengths_and_keyword_names() -> None:
    """Flat keys that read back two ways: a tuple's end and a keyword's name must stay in them."""
    assert launching.call_key(0, ((1, 2), 3), {}) != launching.call_key(0, ((1, 2, 3),), {})
    assert launching.call_key(0, (), {"A": 1}) != launching.call_key(0, (), {"B": 1})
    assert launching.call_key(0, (1,), {}) != launching.call_key(0, (True,), {}) != launching.call_key(0, (1.0,), {})


def test_a_flag_or_a_scale_as_a_constant_parts_signatures() -> None:
    """A bool or a float given to a `tl.constexpr` parameter (the backward's HAS_DLSE) is compiled
    in: keyed by type alone, a call with the flag off ran the kernel compiled with it on (NaN
    gradients after a call through torch.compile had passed an lse gradient)."""
    assert launching.signature(True) != launching.signature(False)
    assert launching.signature(0.5) != launching.signature(0.25)
    assert launching.signature(tl.constexpr(True)) != launching.signature(tl.constexpr(False))


def test_alignment_and_integer_boundaries_part_signatures() -> None:
    """The cases Triton tells apart are told apart: a tensor's 16-byte alignment, an integer of 1,
    a multiple of 16, a 64-bit one."""
    aligned, shifted = BUFFER[:], BUFFER[1:]
    assert launching.signature(aligned) != launching.signature(shifted)
    assert len({launching.signature(v) for v in (1, 16, 17, 2**31)}) == 4


def test_unknown_arguments_take_tritons_launch() -> None:
    with pytest.raises(launching.UnknownArgumentError):
        launching.signature(object())
    with pytest.raises(launching.UnknownArgumentError):
        launching.signature((1, [2]))


def test_bound_arguments_follow_the_parameter_order() -> None:
    """Keyword constants and defaults fill the parameters after the positional ones, in order."""

    class Param:
        def __init__(self, name: str) -> None:
            self.name = name

    def kernel(a, b, C: tl.constexpr, D: tl.constexpr = 7, E: tl.constexpr = 8):  # noqa: N803
        pass

    fake = type("Fake", (), {})()
    fake.params = [Param(n) for n in "abCDE"]
    fake.signature = inspect.signature(kernel)
    remembered = launching._Kernel(fake)
    assert remembered.bound((1, 2), {"E": 5, "C": 3, "num_warps": 4}) == [1, 2, 3, 7, 5]


def test_interpreted_kernels_and_the_switch_take_tritons_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a release the memory serves, a compiled kernel launches from it; an interpreted one, a
    kernel with pre-run hooks, or any with MASKC_FAST_LAUNCH=0, never does."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    def kernel(x):
        pass

    monkeypatch.setattr(launching, "_RELEASE", [True, JITFunction, True])
    compiled, interpreted = JITFunction(kernel), InterpretedFunction(kernel)
    assert launching.enabled(compiled) and not launching.enabled(interpreted)
    compiled.add_pre_run_hook(lambda *args, **kwargs: None)
    assert not launching.enabled(compiled)
    monkeypatch.setenv("MASKC_FAST_LAUNCH", "0")
    assert not launching.enabled(JITFunction(kernel))
