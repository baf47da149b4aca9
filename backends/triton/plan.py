"""What one compiled pattern needs on the GPU: its predicate, the predicate's arguments and its tables.

A plan keeps the rules, not the pattern, so the pattern can be collected; layouts at other tile
shapes are laid out from the same rules, so every kernel tile shape is an exact IR tile shape.
`plans.py` owns the plans and the keys they are found by.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch

from maskc.errors import BackendError
from maskc.grid import TileGrid
from maskc.ir import BlockLayout, CompiledPattern
from maskc.ir.build import build_layout
from maskc.schedule.axes import row_map
from maskc.tensor_memo import LastTensor

from .cache import interpreting, load_module
from .codegen import TABLE_STRIDE, emit_masks, module_source
from .emitter import KernelArg
from .kernels import kernel_module
from .reuse import decided_by_documents
from .runtime import CallInputs, StaticMaps, needs_runtime_layout, runtime_tables
from .tables import Walk, WalkTables, Window, chunking, half_kinds, walk_tables

#: The row map of token order: every position reads its own row.
IDENTITY_ROWS = row_map(None)
#: Tables of rectangular windows kept per plan (the oldest go first).
WINDOW_TABLES = 32
#: Launch tables kept per plan: the whole grid's few (walks × tile shapes × head counts) and windows'.
LAUNCHES = 2 * WINDOW_TABLES


def _drop_oldest(store: dict, limit: int) -> None:
    """Drop `store`'s oldest entries past `limit` (rectangular windows come and go)."""
    while len(store) > limit:
        store.pop(next(iter(store)))


@dataclass(frozen=True)
class LaunchTables:
    """A launch's pattern arguments: tables, per-head table lookup, layout count, the predicate's `mask_args`."""

    walk: WalkTables
    head_layout: torch.Tensor
    #: (batch b, head h) reads table table_of_head[h] + b · table_stride
    table_of_head: torch.Tensor
    table_stride: int
    layouts: int
    mask_args: tuple[Any, ...]

    def kernel_args(self) -> tuple[Any, ...]:
        """The kernels' arguments from `head_layout` to `partial_idx`, in order."""
        walk = self.walk
        return (
            self.head_layout, self.table_of_head, self.table_stride, self.layouts, walk.order,
            walk.full_ptr, walk.full_idx, walk.partial_ptr, walk.partial_idx,
        )  # fmt: skip


class Plan:
    """Predicate, its arguments, and tables per (walk, tile shape, device) of one pattern."""

    def __init__(self, pattern: CompiledPattern, key: str) -> None:
        #: What the operators carry to find this plan again (`plans.plan_by_key`).
        self.key = key
        self.n = pattern.n
        self.rules = tuple(layout.rule for layout in pattern.layouts)
        self.native_tile = (pattern.block_m, pattern.block_n)
        self.masks = emit_masks(self.rules)
        #: What tuned configurations are shared by: same values (spec hash), rules and tile shape.
        self.tune_key = (pattern.spec_hash, self.masks.key, self.native_tile, pattern.n)
        self._head_layout = np.array(pattern.head_layout, dtype=np.int32)  # a copy: tensors need writable memory
        self._layouts: dict[tuple[int, int], tuple[BlockLayout, ...]] = {self.native_tile: pattern.layouts}
        self._tables: dict[tuple, WalkTables] = {}
        self._halves: dict[tuple, torch.Tensor] = {}
        self._window_tables: dict[tuple, WalkTables] = {}
        self._mask_args: dict[str, tuple[Any, ...]] = {}
        self._head_tensors: dict[tuple[str, int], torch.Tensor] = {}
        #: A static layout's launch tables by (walk, tile shape, device, heads, window, chunking): one
        #: lookup per launch, since a call's host time before its kernel starts is time the GPU waits.
        self._launches: dict[tuple, LaunchTables] = {}
        #: Run-time layouts: tile tables built per call from documents, q and k (`runtime.py`).
        self.run_time = needs_runtime_layout(self.rules)
        #: Run-time layouts decided by the documents alone: the last documents tensor's per-call tensors,
        #: and the tables built from those, serve later calls with the same tensor (`reuse.py`).
        self.documents_only = decided_by_documents(self.rules)
        self.last_documents = LastTensor()
        #: The keys of the per-call tensors the predicate reads, in the order the operators carry them.
        self.input_keys = tuple(
            sorted({a.value for a in self.masks.args if a.kind == "input" and a.value != TABLE_STRIDE})
        )
        self._static_maps = StaticMaps()
        #: The rows each query and key position reads (maskc.schedule.axes `row_map`): token order unless the
        #: plan runs a pass whose order the kernels read in place (`read_in_place`).
        self.row_maps: tuple[tuple[int, ...], tuple[int, ...]] = (IDENTITY_ROWS, IDENTITY_ROWS)
        self._row_map_args: tuple[Any, Any] | None = None

    @property
    def mapped(self) -> bool:
        """Whether the kernels read some rows in place of a gather (full-length calls, pointer loads only)."""
        return self.row_maps != (IDENTITY_ROWS, IDENTITY_ROWS)

    def read_in_place(self, q_rows: tuple[int, ...], k_rows: tuple[int, ...]) -> None:
        """Have the kernels read query position p at row q_rows(p) of q (and write out, lse and dq there),
        key position p at row k_rows(p) of k and v (dk, dv likewise): set once, by the schedule's runner,
        before the plan's first launch. Tuned configurations are then this plan's own."""
        self.row_maps = (q_rows, k_rows)
        self.tune_key = (*self.tune_key[:4], self.row_maps)
        self._row_map_args = None

    def row_map_args(self) -> tuple[Any, Any]:
        """(q_map, k_map) as the kernels take them: tuples of tl.constexpr (compiled in)."""
        if self._row_map_args is None:
            import triton.language as tl  # on first use, as for the predicate's arguments

            q_map, k_map = (tuple(tl.constexpr(v) for v in rows) for rows in self.row_maps)
            self._row_map_args = (q_map, k_map)
        return self._row_map_args

    def module(self) -> ModuleType:
        """The generated module holding the predicate `tile_mask` (loaded for the current TRITON_INTERPRET)."""
        return load_module(self.masks.key, lambda: module_source(self.masks))

    def tile_mask(self) -> Any:
        """The predicate the kernels take as their `tile_mask` argument."""
        return self.module().tile_mask

    @staticmethod
    def kernels(name: str) -> ModuleType:
        """Kernel module `name` ("forward", "backward", "decode") for the current TRITON_INTERPRET."""
        return kernel_module(name, interpreting())

    def source(self) -> str:
        return module_source(self.masks)

    def layouts(self, block_m: int, block_n: int) -> tuple[BlockLayout, ...]:
        """The layouts on BLOCK_M × BLOCK_N tiles, laid out from the rules on first use."""
        shape = (block_m, block_n)
        if shape not in self._layouts:
            grid = TileGrid(self.n, block_m, block_n)
            self._layouts[shape] = tuple(build_layout(rule, grid) for rule in self.rules)
        return self._layouts[shape]

    def tables(
        self, walk: Walk, block_m: int, block_n: int, device: torch.device, window: Window | None = None
    ) -> WalkTables:
        """The walk's tables, of the whole grid or of a rectangular call's window (the last few kept)."""
        key = (walk, block_m, block_n, str(device), window, chunking())
        store = self._tables if window is None else self._window_tables
        if key not in store:
            store[key] = walk_tables(self.layouts(block_m, block_n), walk, device, window)
            _drop_oldest(self._window_tables, WINDOW_TABLES)
        return store[key]

    def half_kinds(self, walk: Walk, block_m: int, block_n: int, device: torch.device) -> torch.Tensor | None:
        """The kinds of the two halves of each partial tile of the whole-grid `walk` on block_m × block_n
        tiles (`tables.half_kinds`; rows: halves of the rows, columns: of the keys), int8, aligned with
        that walk's `partial_idx`; None for a run-time layout (its tables are built per call) or a tile
        that does not halve."""
        halved = (block_m // 2, block_n) if walk == "rows" else (block_m, block_n // 2)
        if self.run_time or (block_m if walk == "rows" else block_n) % 2:
            return None
        key = (walk, block_m, block_n, str(device))
        if key not in self._halves:
            codes = half_kinds(self.layouts(block_m, block_n), self.layouts(*halved), walk)
            self._halves[key] = torch.as_tensor(codes if len(codes) else np.zeros(1, dtype=np.int8), device=device)
        return self._halves[key]

    def launch_tables(
        self,
        walk: Walk,
        block_m: int,
        block_n: int,
        device: torch.device,
        heads: int,
        inputs: CallInputs | None,
        window: Window | None = None,
    ) -> LaunchTables:
        """Everything a kernel launch reads about the pattern: the walk's tables (of a rectangular call's
        window, if given), how each (batch, head) finds its table, and the predicate's arguments; per call
        for a run-time layout, which serves full-length calls only."""
        if not self.run_time:
            key = (walk, block_m, block_n, device, heads, window, chunking())
            launch = self._launches.get(key)
            if launch is None:
                tables = self.tables(walk, block_m, block_n, device, window)
                head_layout = self.head_layout(device, heads)
                launch = LaunchTables(tables, head_layout, head_layout, 0, len(self.rules), self.mask_args(device))
                self._launches[key] = launch
                _drop_oldest(self._launches, LAUNCHES)
            return launch
        head_layout = self.head_layout(device, heads)
        if inputs is None:
            raise BackendError("a run-time layout needs the call's inputs (documents, q and k)")
        if window is not None:
            raise BackendError("a run-time layout (documents, top-k, clusters) needs a full-length call")
        grid = TileGrid(self.n, block_m, block_n)
        built = runtime_tables(self.rules, self._head_layout, grid, walk, inputs, self._static_maps, device)
        values = {**inputs.values, TABLE_STRIDE: built.table_stride}
        arguments = tuple(
            values[a.value] if a.kind == "input" else value for a, value in zip(self.masks.args, self.mask_args(device))
        )
        return LaunchTables(
            built.walk, head_layout, built.table_of_head, built.table_stride, len(self.rules), arguments
        )

    def mask_args(self, device: torch.device) -> tuple[Any, ...]:
        """The predicate's `mask_args` tuple: constants as tl.constexpr (the kernels specialise on them),
        run-time integers as they are, lookup tables on `device`; inputs (per call) as their keys."""
        key = str(device)
        if key not in self._mask_args:
            self._mask_args[key] = tuple(_mask_arg(arg, device) for arg in self.masks.args)
        return self._mask_args[key]

    def head_layout(self, device: torch.device, heads: int) -> torch.Tensor:
        """Layout index per query head (all 0 when one shared pattern serves `heads` heads)."""
        key = (str(device), heads)
        if key not in self._head_tensors:
            values = self._head_layout if len(self._head_layout) == heads else np.zeros(heads, dtype=np.int32)
            self._head_tensors[key] = torch.as_tensor(values, device=device)
        return self._head_tensors[key]


def _mask_arg(arg: KernelArg, device: torch.device) -> Any:
    import triton.language as tl  # on first use: the interpreter needs to be chosen before Triton loads

    if arg.kind == "constexpr":
        return tl.constexpr(arg.value)
    if arg.kind == "table":
        return torch.as_tensor(arg.value, device=device)
    return arg.value
