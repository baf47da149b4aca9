"""Kernel launches that bind their arguments once per argument signature, not once per call.

`kernel[grid](*args)` makes Triton bind every argument, specialise it, hash the specialisation and
look the compiled kernel up, on every call: about 80–100 µs of host time a launch on an H200's host
(bench/NOTES.md, seventh session), more than many of maskc's kernels run on the GPU, and a call of
several launches is then bound by its host. `launch_kernel(kernel, grid, *args, **kwargs)` keys the
compiled kernel by a signature of the arguments (`signature`) that determines Triton's
specialisation of every one of them, and launches it through the compiled kernel's own runner
(`CompiledKernel[grid]`, which takes the bound arguments in the kernel's parameter order). A
signature seen for the first time goes through Triton's launch, which compiles or finds the kernel
that is then remembered.

What Triton specialises on: a `tl.constexpr` parameter by its value, whatever its type; any other
(`native_specialize_impl`) a tensor by its dtype and whether its address is a multiple of 16, an
integer by its value when it is 1, else by its width (32 or 64 bits, unsigned past 2**63) and whether
it is a multiple of 16, a float or a bool by type alone, a tensor descriptor by its dtype, block
shape and (Gluon) layout, a jitted function or a constant by value, a tuple by its items.
`signature`, which does not know a parameter's kind, keeps all of that and more (every number and
flag by value), so two calls of one signature always get the same compiled kernel; an argument of
any other kind, or a Triton release this was not checked against (`RELEASES`), takes Triton's own
launch. MASKC_FAST_LAUNCH=0 turns it off; MASKC_FAST_LAUNCH=check binds every remembered launch
through Triton as well and raises where the two differ (for test runs).

What a remembered launch does not redo: Triton's per-call reading of its debug and instrumentation
settings (TRITON_DEBUG changed within a process keeps the kernels already remembered) and its check
that a kernel's global constants have not changed since it compiled. Only NVIDIA's backend: AMD's
specialises a tensor on its storage size as well.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any

import torch

from maskc.errors import BackendError

#: Triton releases whose launch path `launch_kernel` mirrors (checked on the GPU; bench/NOTES.md).
RELEASES = ("3.6",)
#: Signatures remembered per kernel before the memory is cleared (each a compiled kernel's reference).
MAX_SIGNATURES = 1024


class UnknownArgumentError(Exception):
    """An argument whose specialisation `signature` does not know: the call takes Triton's launch."""


def _descriptor(arg: Any) -> Hashable:
    layout = getattr(arg, "layout", None)
    return arg.base.dtype, tuple(arg.block_shape), None if layout is None else _layout(layout)


_LAYOUTS: dict[int, tuple[Any, str]] = {}


def _layout(layout: Any) -> str:
    """A Gluon layout's repr (what Triton keys it by), remembered by identity: a repr costs
    microseconds, and the kernels' layouts are made once (`descriptors._shared_layout`). The memory
    holds each layout, so its id is not reused while remembered."""
    entry = _LAYOUTS.get(id(layout))
    if entry is None or entry[0] is not layout:
        if len(_LAYOUTS) >= MAX_SIGNATURES:
            _LAYOUTS.clear()
        entry = _LAYOUTS[id(layout)] = (layout, repr(layout))
    return entry[1]


#: Types a signature records by value: an integer's value decides its width, alignment and
#: constant-1 cases; any of them may be a compile-time constant (a `tl.constexpr` parameter), which
#: Triton keys by value (a bool flag such as HAS_DLSE: by type alone, a call with the flag off would
#: run the kernel compiled with it on); a string can only be one.
_BY_VALUE = frozenset({int, bool, float, str})
_NONE = type(None)
_TENSOR = torch.Tensor
#: Triton's own argument types and what of them enters a signature (`know_triton_types`).
_TRITON_TYPES: dict[type, Any] = {}
#: `tl.constexpr`, a compile-time constant: by its value's signature (`know_triton_types`).
_CONSTEXPR: list[type] = []


def know_triton_types() -> None:
    """Let Triton's argument types into signatures (imported here, on the first compiled launch)."""
    import triton.language as tl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor
    from triton.runtime.jit import JITFunction
    from triton.tools.tensor_descriptor import TensorDescriptor

    _CONSTEXPR[:] = [tl.constexpr]
    _TRITON_TYPES[GluonDescriptor] = _descriptor
    _TRITON_TYPES[TensorDescriptor] = _descriptor
    _TRITON_TYPES[JITFunction] = lambda arg: arg  # by identity (its hash is its source's)


def encode(values: Any, key: list) -> None:
    """Append each value's signature to `key`: its type, then what Triton specialises it on, so that
    the flat list reads back one way (module docstring). One loop, not a call per argument: a
    launch has some forty arguments, and this is the host time that is left of binding them."""
    constant = _CONSTEXPR[0] if _CONSTEXPR else None
    for arg in values:
        kind = type(arg)
        key.append(kind)
        if kind is _TENSOR:
            key.append(arg.dtype)
            key.append(arg.data_ptr() & 15 == 0)
        elif kind in _BY_VALUE:
            key.append(arg)
        elif kind is tuple:
            key.append(len(arg))
            encode(arg, key)
        elif kind is constant:
            encode((arg.value,), key)
        elif kind is not _NONE:
            key.append(_other(arg))


def _other(arg: Any) -> Hashable:
    triton_kind = _TRITON_TYPES.get(type(arg))
    if triton_kind is not None:
        return triton_kind(arg)
    if isinstance(arg, torch.Tensor):  # a subclass: a Parameter
        return arg.dtype, arg.data_ptr() & 15 == 0
    raise UnknownArgumentError(type(arg).__name__)


def call_key(device: int, args: tuple, kwargs: dict[str, Any]) -> tuple:
    """The memory's key of a launch: the device, then every positional argument's signature, then
    every keyword's name and its value's (a name is a string, never a type, so the flat list still
    reads back one way)."""
    key: list = [device]
    encode(args, key)
    for name, value in kwargs.items():
        key.append(name)
        encode((value,), key)
    return tuple(key)


def signature(arg: Any) -> Hashable:
    """A key of `arg` at least as fine as Triton's specialisation of it (module docstring)."""
    key: list = []
    encode((arg,), key)
    return tuple(key)


class _Kernel:
    """One jitted kernel's compiled kernels by call signature, and its parameters' order."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.names = [param.name for param in kernel.params]
        self.defaults = {
            name: parameter.default
            for name, parameter in kernel.signature.parameters.items()
            if parameter.default is not parameter.empty
        }
        self.compiled: dict[Hashable, Any] = {}
        self.remembered_launches = 0  # launches that skipped Triton's binding (tests count them)

    def bound(self, args: tuple, kwargs: dict[str, Any]) -> list[Any]:
        """Every parameter's value in order, as Triton's binder hands them to the compiled kernel."""
        rest = self.names[len(args) :]
        return [*args, *(kwargs[name] if name in kwargs else self.defaults[name] for name in rest)]

    def launch(self, grid: tuple[int, ...], args: tuple, kwargs: dict[str, Any], checking: bool = False) -> None:
        try:
            signature_key = call_key(torch.cuda.current_device(), args, kwargs)
        except UnknownArgumentError:
            self.kernel[grid](*args, **kwargs)
            return
        compiled = self.compiled.get(signature_key)
        if compiled is None:
            compiled = self.kernel[grid](*args, **kwargs)
            if compiled is not None:  # None: nothing compiled (Triton's launch said why, or returned)
                if len(self.compiled) >= MAX_SIGNATURES:
                    self.compiled.clear()
                self.compiled[signature_key] = compiled.result() if hasattr(compiled, "result") else compiled
            return
        bound = self.bound(args, kwargs)
        if checking:
            self.check(compiled, args, kwargs, bound)
        compiled[(*grid, 1, 1)[:3]](*bound)
        self.remembered_launches += 1

    def check(self, compiled: Any, args: tuple, kwargs: dict[str, Any], bound: list[Any]) -> None:
        """Raise unless Triton's own binding of this call picks `compiled` and hands it `bound`
        (MASKC_FAST_LAUNCH=check: the memory checked on every remembered launch, at Triton's cost)."""
        from triton import knobs
        from triton.runtime import driver
        from triton.runtime.jit import compute_cache_key

        options = dict(
            kwargs,
            debug=kwargs.get("debug", self.kernel.debug) or knobs.runtime.debug,
            instrumentation_mode=knobs.compilation.instrumentation_mode,
        )  # as JITFunction.run sets them
        kernel_cache, key_cache, _, _, binder = self.kernel.device_caches[driver.active.get_current_device()]
        triton_bound, specialization, triton_options = binder(*args, **options)
        expected = kernel_cache.get(compute_cache_key(key_cache, specialization, triton_options))
        same_arguments = len(bound) == len(triton_bound) and all(
            a is b for a, b in zip(bound, triton_bound.values(), strict=False)
        )
        if expected is not compiled or not same_arguments:
            raise BackendError(
                f"the launch memory's {self.kernel.fn.__name__} differs from Triton's launch "
                f"({'another compiled kernel' if expected is not compiled else 'other arguments'}); "
                "set MASKC_FAST_LAUNCH=0 and report it"
            )


_KERNELS: dict[int, _Kernel] = {}
#: Once known: whether the installed Triton is one of RELEASES, its JITFunction, whether its driver
#: is NVIDIA's (asked at the first compiled launch).
_RELEASE: list[Any] = []
#: The environment variable: 0 turns the memory off, check checks it (module docstring).
SWITCH = "MASKC_FAST_LAUNCH"


def enabled(kernel: Any, setting: str | None = None) -> bool:
    """Whether `kernel` launches through `launch_kernel`'s memory: a compiled (not interpreted)
    kernel with no pre-run hooks, under a Triton of `RELEASES` on NVIDIA's backend, unless
    MASKC_FAST_LAUNCH=0 (`setting`: the variable's value, read by the caller)."""
    if (os.environ.get(SWITCH, "1") if setting is None else setting) == "0":
        return False
    if not _RELEASE:
        import triton
        from triton.runtime.jit import JITFunction

        _RELEASE[:] = [triton.__version__.startswith(RELEASES), JITFunction, None]
    if not (_RELEASE[0] and isinstance(kernel, _RELEASE[1]) and not kernel.pre_run_hooks):
        return False
    if _RELEASE[2] is None:  # asked of the driver once, at the first compiled launch
        _RELEASE[2] = _on_nvidia()
        if _RELEASE[2]:
            know_triton_types()
    return _RELEASE[2]


def _on_nvidia() -> bool:
    """Whether Triton's active driver targets NVIDIA GPUs (AMD's specialises tensors on their storage
    size too, which signatures do not record)."""
    from triton.runtime import driver

    return driver.active.get_current_target().backend == "cuda"


def remembered_launches() -> int:
    """Launches so far, over every kernel, that skipped Triton's binding."""
    return sum(kernel.remembered_launches for kernel in _KERNELS.values())


def launch_kernel(kernel: Any, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """`kernel[grid](*args, **kwargs)`, with Triton's binding done once per call signature."""
    setting = os.environ.get(SWITCH, "1")  # read once a launch: an environment lookup is host time too
    if type(grid) is not tuple or not enabled(kernel, setting):  # a callable grid: Triton evaluates it
        kernel[grid](*args, **kwargs)
        return
    remembered = _KERNELS.get(id(kernel))
    if remembered is None or remembered.kernel is not kernel:
        remembered = _KERNELS[id(kernel)] = _Kernel(kernel)
    remembered.launch(grid, args, kwargs, checking=setting == "check")
