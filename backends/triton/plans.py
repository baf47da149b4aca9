"""The one owner of plans and of the keys they are found by.

The torch.library operators take tensors, numbers and strings only, so a call carries its plan
as a string key. Two kinds of key exist:

- a plan key, `maskc-plan-<k>`, given to each plan built for a pattern object; it finds the plan
  while the plan lives (a pattern resolved from q and k for one call is found this way);
- a traced key, `compiled:<spec hash>:<n>:<block_m>:<block_n>:<heads>`, which torch.compile
  records: it is read off the pattern's attributes, which trace without a graph break, and finds
  the pattern again through the compiler's cache lookup (`maskc.compiler.cached_pattern`).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable

from maskc.compiler import cached_pattern
from maskc.errors import BackendError
from maskc.ir import CompiledPattern

from .plan import Plan

_PLAN_PREFIX = "maskc-plan-"
#: A pattern a backend derives from a compiled one carries `<spec hash>+<name>` (e.g. clusters in
#: sorted order); a traced key names it so, and DERIVED[name] derives it again from the cached pattern.
DERIVED_SEPARATOR = "+"
DERIVED: dict[str, Callable[[CompiledPattern], CompiledPattern]] = {}
_TRACED_PREFIX = "compiled:"


class PlanRegistry:
    """Plans by pattern object and by key; neither keeps a pattern or a plan alive."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._by_pattern: weakref.WeakKeyDictionary[CompiledPattern, Plan] = weakref.WeakKeyDictionary()
        self._by_key: weakref.WeakValueDictionary[str, Plan] = weakref.WeakValueDictionary()

    def plan_for(self, pattern: CompiledPattern) -> Plan:
        """The plan of a pattern object, built on first use."""
        plan = self._by_pattern.get(pattern)
        if plan is None:
            plan = Plan(pattern, f"{_PLAN_PREFIX}{next(self._counter)}")
            self._by_pattern[pattern] = plan
            self._by_key[plan.key] = plan
        return plan

    def plan_by_key(self, key: str) -> Plan:
        """The plan a plan key or a traced key names; an error when its pattern is gone."""
        plan = self._by_key.get(key)
        if plan is None and key.startswith(_TRACED_PREFIX):
            plan = self._plan_of_cached_pattern(key)
        if plan is None:
            raise BackendError(
                f"{key}: its compiled pattern no longer exists; keep the pattern alive while it runs "
                "(torch.compile graphs find theirs in maskc.compile's cache)"
            )
        return plan

    def _plan_of_cached_pattern(self, key: str) -> Plan | None:
        spec_hash, *sizes = key.removeprefix(_TRACED_PREFIX).split(":")
        n, block_m, block_n, heads = (int(size) for size in sizes)
        base, _, derived = spec_hash.partition(DERIVED_SEPARATOR)
        pattern = cached_pattern(base, n, block_m, block_n, heads)
        if pattern is None or (derived and derived not in DERIVED):
            return None
        plan = self.plan_for(DERIVED[derived](pattern) if derived else pattern)
        self._by_key[key] = plan
        return plan


def traced_key(pattern: CompiledPattern, derived: str = "") -> str:
    """The key a torch.compile graph carries, read off the pattern's attributes only; with `derived`, the
    key of the pattern DERIVED[derived] makes from it."""
    spec_hash = f"{pattern.spec_hash}{DERIVED_SEPARATOR}{derived}" if derived else pattern.spec_hash
    return f"{_TRACED_PREFIX}{spec_hash}:{pattern.n}:{pattern.block_m}:{pattern.block_n}:{pattern.heads}"


PLANS = PlanRegistry()
plan_for = PLANS.plan_for
plan_by_key = PLANS.plan_by_key
