"""Compile maskc's Triton kernels for a Hopper target without a GPU, and summarise what came out.

Runs real maskc calls (forward, backward, a decoding step) on CPU tensors while Triton believes a
CUDA sm_90 device is current: every launch compiles exactly as on an H200 (same arguments, same
specialisation, the first tuning candidate of each kernel) and stops before launching. For each
compiled kernel it prints TTGIR operation counts, PTX instruction count, registers and spills
(cuobjdump on Triton's own cubin), shared memory and ptxas's performance advisories (ptxas run
again on the PTX with -v), one JSON object per line.

Used to check that a change of the kernels' source form changes no compiled code (bench/NOTES.md).
Needs a Triton with the NVIDIA backend (it bundles ptxas and cuobjdump); no GPU. The Gluon kernels
(--ws) need the Triton release they are written for (`tuning.GLUON_RELEASES`), e.g. its wheel
unpacked on PYTHONPATH.

    MASKC_TRITON_AUTOTUNE=0 python bench/compile_offline.py > compiled.jsonl
    python bench/compile_offline.py --tma   # every kernel's tensor-descriptor (TMA) variant
    python bench/compile_offline.py --atomic-dq [--tma]   # dK/dV computing dQ with atomics
    python bench/compile_offline.py --catalogue   # every spec in specs/ at the tile shapes the tuner
                                                  # picks most, looking for spills (registers, stack)
    python bench/compile_offline.py --ws   # the forward, dQ and dK/dV as the warp-specialised Gluon kernels
    python bench/compile_offline.py --ws-halves   # the same, reading their halves' kinds
    python bench/compile_offline.py --check-launches [--ws]   # each case's calls again from the launch
        # memory (backends/triton/launching.py), every remembered launch checked against Triton's binding

A predicate's cost is invisible in the tuner's times until it spills: top-k's per-element flag
reads took its forward to 255 registers and a 192-byte stack, 37 % of its time (bench/NOTES.md).
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

#: (name, spec, seq_len, block size, schedule, documents?) of the patterns compiled.
CASES = [
    ("window", {"causal": True, "pattern": {"window": {"before": 255, "after": 0}}}, 1024, 64, "single", False),
    ("longformer", "specs/longformer.yaml", 1024, 64, "single", False),
    # n = 8192: the global row and column are long and run as chunks (SPLIT kernels and merges)
    ("longformer, long lines split", "specs/longformer.yaml", 8192, 64, "single", False),
    ("strided, split schedule", "specs/sparse_transformer_strided.yaml", 1024, 64, "split", False),
    ("documents (run-time)", {"causal": True, "pattern": [
        {"intersect": [{"document": {}}, {"window": {"before": 100, "after": 0}}]},
        {"sink": {"count": 2, "per": "document"}}]}, 1024, 64, "single", True),
    ("top-k (run-time)", {"causal": True, "block_size": 64, "pattern": [
        {"window": {"before": 255, "after": 0}}, {"topk": {"blocks": 4}}, {"sink": {"count": 4}}]},
     1024, 64, "single", False),
]  # fmt: skip
_OP = re.compile(r"^\s*(?:%[\w#:, %]+=\s*)?\"?([a-z_]+\.[a-z_.0-9]+)")


class _Hopper:
    """Just enough of a Triton driver to compile for sm_90 on a machine without a GPU."""

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int) -> int:
        return 0

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", 90, 128)


def _compile_only(compiled: list) -> None:
    """Every launch compiles (warmup) instead of running, and its compiled kernel is kept."""
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    driver.set_active(_Hopper())
    run = JITFunction.run

    def compile_run(self, *args, grid, warmup, **kwargs):
        kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        compiled.append((self.fn.__name__, kernel))
        return kernel

    JITFunction.run = compile_run


def _summary(name: str, kernel) -> dict:
    ops = collections.Counter(m.group(1) for line in kernel.asm["ttgir"].splitlines() if (m := _OP.match(line)))
    ptx = [
        line.split()[0]
        for line in kernel.asm["ptx"].splitlines()
        if line.startswith("\t") and line.strip() and not line.strip().startswith(("//", ".", "$", "{", "}"))
    ]
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        tool = Path(__import__("triton").__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        usage = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    regs = re.search(r"REG:(\d+)", usage)
    stack = re.search(r"STACK:(\d+)", usage)
    advisories = _ptxas_advisories(kernel.asm["ptx"], tool.parent / "ptxas")
    return {
        "kernel": name,
        "ttgir_ops": sum(ops.values()),
        "dots": sum(v for k, v in ops.items() if "dot" in k),
        "loops": ops["scf.for"],
        "loads": sum(v for k, v in ops.items() if "load" in k or "async_copy" in k),
        "divisions": sum(v for k, v in ops.items() if k.startswith("arith.div") or k.startswith("arith.rem")),
        "ptx_instructions": len(ptx),
        "registers": int(regs.group(1)) if regs else None,
        "stack": int(stack.group(1)) if stack else None,
        "shared": kernel.metadata.shared,
        # ptxas's performance advisories, e.g. C7514: warp-group products serialised (each waits for the
        # one before), which Triton does not pass on
        "advisories": advisories,
        "warps": kernel.metadata.num_warps,
        "stages": kernel.metadata.num_stages,
    }


def _ptxas_advisories(ptx: str, ptxas: Path) -> list[str]:
    """The codes and texts of ptxas's "Potential Performance Loss" notes for `ptx` (sm_90a)."""
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        done = subprocess.run(
            [ptxas, "-arch=sm_90a", "-v", source, "-o", Path(folder) / "kernel.cubin"], capture_output=True, text=True
        )
    return [line.split("info    : ", 1)[-1] for line in done.stderr.splitlines() if "Performance Loss" in line]


def _warp_specialised(halves: bool = False) -> None:
    """The warp-specialised kernels' candidates (kernels/forward_ws.py, backward_ws.py; the backward's
    with the most stages; with `halves` those that read their halves' kinds), the first of the
    others; a stand-in count of processors for their persistent grids."""
    from maskc.backends.triton import backward, forward, tuning

    original = tuning.candidates
    space = tuning._WS_HALVES[128] if halves else tuning._WS[128]
    backward_space = tuning._WS_BACKWARD_HALVES if halves else tuning._WS_BACKWARD

    def candidates(kernel, head_dim, dtype, native, tma=False, ws=False, *_):  # the spaces chosen above
        if kernel == "forward" and ws:  # a call the kernel serves (forward.ws_eligible)
            return [c for c in space if c.block_n == native[1]] or space[:1]
        if kernel in backward_space and ws:
            return backward_space[kernel][128][-1:]
        return original(kernel, head_dim, dtype, native, tma)[:1]

    tuning.candidates = candidates
    tuning.has_tma = lambda device: True  # the CPU tensors stand for a Hopper's
    forward.processors = backward.processors = lambda device: 132


def _variants(**variant: bool) -> None:
    """Every candidate as its `variant` (tma for every kernel, atomic_dq for dK/dV), as a GPU may tune them."""

    from maskc.backends.triton import tuning

    original = tuning.candidates

    def candidates(kernel, head_dim, dtype, native, tma=False, ws=False, *_):  # no warp-specialised ones
        found = original(kernel, head_dim, dtype, native, tma)
        return tuning.as_variant(found, kernel, **variant)

    tuning.candidates = candidates


#: The catalogue sweep's tile shapes (forward, dQ, dK/dV): the tuner's most frequent picks at head
#: dim 128 (bench/RESULTS.md), large and small.
PICKS = {
    "128-row": ((128, 128, 8, 3, True), (128, 64, 8, 3, True), (64, 128, 8, 3, True)),
    "64-row": ((64, 64, 4, 3, True), (64, 64, 4, 3, True), (32, 64, 4, 3, False)),
}


def _catalogue_cases() -> list[tuple]:
    """Every spec in specs/ at n = 8192 (grid specs at their own n), with the spec's heads."""
    import maskc

    cases = []
    for path in sorted(Path("specs").glob("*.yaml")):
        spec = maskc.load(path)
        n = None if getattr(spec, "grid", None) is not None else 8192
        cases.append((path.name, spec, n, 64, "auto", False))
    return cases


def _pick(shapes: tuple) -> None:
    """Each kernel's only candidate: the given (block_m, block_n, warps, stages, tma)."""
    from maskc.backends.triton import tuning

    chosen = dict(zip(("forward", "dq", "dkdv"), (tuning.KernelConfig(*shape) for shape in shapes), strict=True))
    tuning.candidates = lambda kernel, *args, **kwargs: [chosen[kernel]]
    tuning.forget_configs()  # the picks are remembered per problem


def _compile_cases(cases: list[tuple], compiled: list, label_suffix: str = "") -> None:
    import maskc

    for label, spec, n, block, schedule, documents in cases:
        spec = maskc.Spec(name="offline", **spec) if isinstance(spec, dict) else spec
        heads = getattr(spec, "heads", None) or 2
        pattern = maskc.compile(spec, seq_len=n, block_size=block, heads=heads, schedule=schedule)
        q, k, v = (torch.randn(1, heads, pattern.n, 128, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        docs = torch.as_tensor(maskc.ids_from_lengths([300, 500, 224]))[None] if documents else None
        start = len(compiled)
        out = maskc.attention(q, k, v, pattern, backend="triton", documents=docs)
        out.float().sum().backward()
        for name, kernel in compiled[start:]:
            print(json.dumps({"case": label + label_suffix, **_summary(name, kernel)}), flush=True)


def main() -> None:
    from maskc.backends.triton import backend as triton_backend

    flags = {
        "--tma": "tma",
        "--atomic-dq": "atomic_dq",
        "--catalogue": "catalogue",
        "--ws": "ws",
        "--ws-halves": "halves",
        "--check-launches": "check",
    }
    unknown = [a for a in sys.argv[1:] if a not in flags]
    if unknown:
        sys.exit(f"unknown option(s) {' '.join(unknown)}; the options are {', '.join(flags)}")
    chosen = {flags[a]: True for a in sys.argv[1:]}
    check = chosen.pop("check", False)
    catalogue = chosen.pop("catalogue", False)
    halves = chosen.pop("halves", False)
    ws = chosen.pop("ws", False) or halves
    if (catalogue or ws) and (chosen or (catalogue and ws)):
        sys.exit("--catalogue and --ws (or --ws-halves) compile their own tile shapes; give either alone")
    if ws:
        _warp_specialised(halves)
    if chosen:
        _variants(**chosen)

    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["MASKC_TRITON_AUTOTUNE"] = "0"
    os.environ["MASKC_FAST_LAUNCH"] = "0"  # every launch compiles (a remembered one would load the binary)
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="triton-offline-"))
    triton_backend.unsupported_reason = lambda *args: None  # CPU tensors stand in for CUDA ones
    compiled: list = []
    _compile_only(compiled)
    if check:
        _check_launches()
        return
    if catalogue:
        for shapes_name, shapes in PICKS.items():
            _pick(shapes)
            _compile_cases(_catalogue_cases(), compiled, f", {shapes_name} tiles")
        return
    _compile_cases(CASES, compiled)
    _decode(compiled)


def _check_launches() -> None:
    """Every case's forward and backward, with and without a gradient through the lse (a compile-time
    flag of the backward), three times each under MASKC_FAST_LAUNCH=check: after the first, launches
    come from the launch memory, and each is bound by Triton too and compared (same compiled kernel,
    same arguments), raising where they differ. The memory's launches stop before the GPU."""
    from triton.compiler.compiler import CompiledKernel

    import maskc
    from maskc.backends.triton import launching

    os.environ["MASKC_FAST_LAUNCH"] = "check"
    CompiledKernel.__getitem__ = lambda self, grid: lambda *args: None
    torch.cuda.current_device = lambda: 0
    for label, spec, n, block, schedule, documents in CASES:
        spec = maskc.Spec(name="offline", **spec) if isinstance(spec, dict) else spec
        pattern = maskc.compile(spec, seq_len=n, block_size=block, heads=2, schedule=schedule)
        docs = torch.as_tensor(maskc.ids_from_lengths([300, 500, 224]))[None] if documents else None
        before = {id(k): k.remembered_launches for k in launching._KERNELS.values()}
        for through_lse in (True, False) * 3:
            q, k, v = (torch.randn(1, 2, pattern.n, 128, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
            out, lse = maskc.attention(q, k, v, pattern, backend="triton", documents=docs, return_lse=True)
            (out.float().sum() + (lse.sum() if through_lse else 0)).backward()
        checked = {
            k.kernel.fn.__name__: k.remembered_launches - before.get(id(k), 0) for k in launching._KERNELS.values()
        }
        print(
            json.dumps({"case": label, "remembered_launches_checked": {k: c for k, c in checked.items() if c}}),
            flush=True,
        )


def _decode(compiled: list) -> None:
    """One decoding step of 4 queries over a Longformer cache (its split and merge kernels)."""
    import maskc
    from maskc.backends.triton.decode import decode_attention
    from maskc.backends.triton.plans import plan_for

    pattern = maskc.compile("specs/longformer.yaml", seq_len=1024, block_size=64, heads=2)
    q = torch.randn(1, 2, 4, 128, dtype=torch.bfloat16)
    k = v = torch.randn(1, 2, 512, 128, dtype=torch.bfloat16)
    positions = torch.as_tensor(np.arange(512, dtype=np.int32))[None]
    start = len(compiled)
    decode_attention(plan_for(pattern), q, k, v, positions, torch.tensor([512], dtype=torch.int32),
                     torch.tensor([512], dtype=torch.int32), 0.1)  # fmt: skip
    for name, kernel in compiled[start:]:
        print(json.dumps({"case": "decode (longformer)", **_summary(name, kernel)}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
