"""What one compiled pattern needs on the GPU: its kernel module, mask arguments and tables.

A plan is built once per `CompiledPattern` object and found again by a string key, which is
what the torch.library operators carry (they take tensors, numbers and strings only). It keeps
the rules, not the pattern, so the pattern can be collected; layouts at other tile shapes are
laid out from the same rules, so every kernel tile shape is an exact IR tile shape.
"""

from __future__ import annotations

import itertools
import weakref
from types import ModuleType
from typing import Any

import numpy as np
import torch

from maskc.errors import BackendError
from maskc.grid import TileGrid
from maskc.ir import BlockLayout, CompiledPattern

from .cache import load_module
from .codegen import emit_masks, module_source
from .tables import Walk, WalkTables, Window, walk_tables

_COUNTER = itertools.count()
#: Tables of rectangular windows kept per plan (the oldest go first).
WINDOW_TABLES = 32
_BY_PATTERN: weakref.WeakKeyDictionary[CompiledPattern, Plan] = weakref.WeakKeyDictionary()
_BY_KEY: weakref.WeakValueDictionary[str, Plan] = weakref.WeakValueDictionary()


class Plan:
    """Module, predicate arguments, and tables per (walk, tile shape, device) of one pattern."""

    def __init__(self, pattern: CompiledPattern) -> None:
        self.key = f"maskc-plan-{next(_COUNTER)}"
        self.n = pattern.n
        self.rules = tuple(layout.rule for layout in pattern.layouts)
        self.native_tile = (pattern.block_m, pattern.block_n)
        self.masks = emit_masks(self.rules)
        #: What tuned configurations are shared by: same values (spec hash), rules and tile shape.
        self.tune_key = (pattern.spec_hash, self.masks.key, self.native_tile, pattern.n)
        self._head_layout = np.asarray(pattern.head_layout, dtype=np.int32)
        self._layouts: dict[tuple[int, int], tuple[BlockLayout, ...]] = {self.native_tile: pattern.layouts}
        self._tables: dict[tuple, WalkTables] = {}
        self._window_tables: dict[tuple, WalkTables] = {}
        self._mask_values: dict[str, list[Any]] = {}
        self._head_tensors: dict[tuple[str, int], torch.Tensor] = {}

    def module(self) -> ModuleType:
        return load_module(self.masks.key, lambda: module_source(self.masks))

    def source(self) -> str:
        return module_source(self.masks)

    def layouts(self, block_m: int, block_n: int) -> tuple[BlockLayout, ...]:
        """The layouts on BLOCK_M × BLOCK_N tiles, laid out from the rules on first use."""
        shape = (block_m, block_n)
        if shape not in self._layouts:
            grid = TileGrid(self.n, block_m, block_n)
            self._layouts[shape] = tuple(BlockLayout.build(rule, grid) for rule in self.rules)
        return self._layouts[shape]

    def tables(
        self, walk: Walk, block_m: int, block_n: int, device: torch.device, window: Window | None = None
    ) -> WalkTables:
        """The walk's tables, of the whole grid or of a rectangular call's window (the last few kept)."""
        key = (walk, block_m, block_n, str(device), window)
        store = self._tables if window is None else self._window_tables
        if key not in store:
            store[key] = walk_tables(self.layouts(block_m, block_n), walk, device, window)
            while len(self._window_tables) > WINDOW_TABLES:
                self._window_tables.pop(next(iter(self._window_tables)))
        return store[key]

    def mask_values(self, device: torch.device) -> list[Any]:
        """The predicate's arguments in order: integers as they are, lookup tables on `device`."""
        key = str(device)
        if key not in self._mask_values:
            self._mask_values[key] = [
                torch.as_tensor(arg.value, device=device) if arg.kind == "table" else arg.value
                for arg in self.masks.args
            ]
        return self._mask_values[key]

    def head_layout(self, device: torch.device, heads: int) -> torch.Tensor:
        """Layout index per query head (all 0 when one shared pattern serves `heads` heads)."""
        key = (str(device), heads)
        if key not in self._head_tensors:
            values = self._head_layout if len(self._head_layout) == heads else np.zeros(heads, dtype=np.int32)
            self._head_tensors[key] = torch.as_tensor(values, device=device)
        return self._head_tensors[key]


def plan_for(pattern: CompiledPattern) -> Plan:
    """The plan of a pattern object, built on first use."""
    plan = _BY_PATTERN.get(pattern)
    if plan is None:
        plan = Plan(pattern)
        _BY_PATTERN[pattern] = plan
        _BY_KEY[plan.key] = plan
    return plan


def traced_key(pattern: CompiledPattern) -> str:
    """The key a torch.compile graph carries: what `maskc.compile` caches the pattern by.

    It is read off the pattern's attributes only, which torch.compile traces without a break; the
    plan is found from it when the graph runs (`plan_by_key`).
    """
    return f"compiled:{pattern.spec_hash}:{pattern.n}:{pattern.block_m}:{pattern.block_n}:{pattern.heads}"


def plan_by_key(key: str) -> Plan:
    plan = _BY_KEY.get(key)
    if plan is None and key.startswith("compiled:"):
        plan = _plan_of_cached_pattern(key)
    if plan is None:
        raise BackendError(
            f"{key}: its compiled pattern no longer exists; keep the pattern alive while it runs "
            "(torch.compile graphs find theirs in maskc.compile's cache)"
        )
    return plan


def _plan_of_cached_pattern(key: str) -> Plan | None:
    """The plan of the pattern `maskc.compile` holds for a traced key, if it still holds it."""
    from maskc import compiler

    for pattern in compiler.cached_patterns():
        if traced_key(pattern) == key and not pattern.dynamic:
            plan = plan_for(pattern)
            _BY_KEY[key] = plan
            return plan
    return None
