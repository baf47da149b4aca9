"""The cost model: which parts of a pattern run as passes of their own, in which order.

Predicted work of a schedule = the tile area its kernels compute (masked pairs included) plus,
for every token row copied into a pass's order, GATHER_PAIRS_PER_ROW pair-equivalents (none for
a pass the kernels read in place, `axes.py`), plus,
when there are several passes, MERGE_PAIRS_PER_ROW for every query row each pass merges. Parts
are split out greedily, each kept only when it lowers the prediction, so the single pass in token
order stays wherever it is cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass

from maskc.errors import MaskcError
from maskc.grid import TileGrid
from maskc.ir import BlockLayout, CompiledPattern
from maskc.ir.build import build_layout
from maskc.limits import MAX_TILE_ROWS
from maskc.origin import NOWHERE
from maskc.rules import DifferenceRule, IntersectRule, Rule, UnionRule, intersect_rules, layout_rule
from maskc.schedule.axes import in_place_maps
from maskc.schedule.decompose import Order, disjuncts, merged_gather, merged_residue, order_of
from maskc.schedule.passes import identity_pass, lowered_pass
from maskc.schedule.record import Pass, Schedule
from maskc.schedule.tiled import tiled_pass
from maskc.text import format_ranges

#: "single": one pass in token order; "auto": the cost model's choice; "split": every part that
#: asks for another order gets its pass, whatever the cost (to test and to measure each lowering).
SCHEDULE_MODES = ("single", "auto", "split")

#: Pair-equivalents charged per copied token row. A gather copy reads and writes a row of q
#: (or of k and v) and scatters the output back: about 16·D bytes, which on an H200 (about 150
#: flops per byte of HBM bandwidth at bf16) costs as much as about 600 pairs of 4·D flops each;
#: an order the kernels read in place (an order of axes over all positions) is charged nothing.
#: 256 is an estimate (bench/NOTES.md).
GATHER_PAIRS_PER_ROW = 256


@dataclass
class _Group:
    """Disjuncts that ask for one order, and so share a pass."""

    order: Order
    rules: list[Rule]

    @property
    def rule(self) -> Rule:
        return union_of(self.rules)


def union_of(rules: list[Rule]) -> Rule:
    """The union of disjuncts, with conjuncts they all share factored out: (a & c) | (b & c) is
    (a | b) & c, whose token sets then merge (`layout_rule`) and evaluate once, not once per part."""
    if len(rules) == 1:
        return rules[0]
    parts = [list(r.kids) if isinstance(r, IntersectRule) else [r] for r in rules]
    common = [c for c in parts[0] if all(any(c is x for x in p) for p in parts[1:])]
    if not common:
        return UnionRule(rules)
    rests = [[x for x in p if not any(x is c for c in common)] for p in parts]
    if any(not rest for rest in rests):
        return intersect_rules(common, origin=NOWHERE)
    union = UnionRule([rest[0] if len(rest) == 1 else IntersectRule(rest) for rest in rests])
    return IntersectRule([layout_rule(union), *common])


#: Pair-equivalents charged per query row of every pass when there are several: the merge reads
#: each pass's output and lse and accumulates them in float32 (about 18·D bytes a row, in torch
#: today), which at the same balance is about 600 pairs; an estimate, like the gather charge.
MERGE_PAIRS_PER_ROW = 512
#: The smaller tile side split passes may use (see `pass_tiles`).
PASS_TILE = 64
#: A pattern with nothing to lower is laid out again on smaller tiles only up to this many of them
#: (a bound computed before building: at huge n the smaller tiles' layout would not fit).
MAX_RETILED_TILES = 1 << 22


def predicted_work(passes: list[Pass], n: int) -> int:
    """Tile area, plus copies, plus the merge when there is more than one pass (pair-equivalents), of
    passes over a pattern of n positions."""
    work = sum(p.tile_area() + GATHER_PAIRS_PER_ROW * copied_rows(p, n) for p in passes)
    if len(passes) > 1:
        work += MERGE_PAIRS_PER_ROW * sum(p.nq for p in passes)
    return work


def reads_in_place(p: Pass, n: int) -> bool:
    """Whether the Triton kernels read pass `p` of a pattern of n positions in place (axes.py)."""
    return in_place_maps(p.q_index, p.q_identity, p.k_index, p.k_identity, n) is not None


def copied_rows(p: Pass, n: int) -> int:
    """Token rows a pass copies into its order: none where the kernels read it in place."""
    return 0 if p.gathered_rows() and reads_in_place(p, n) else p.gathered_rows()


def _groups(rule: Rule, n: int) -> list[_Group]:
    """The rule's disjuncts grouped by the order they ask for, in order of appearance."""
    groups: dict[tuple[object, ...], _Group] = {}
    for part in disjuncts(rule):
        order = order_of(part, n)
        key = order.group
        if order.tokens:
            key = (order.kind,)
            if key in groups:
                order = merged_gather(groups[key].order, order)
        elif order.kind == "residue" and key in groups:
            # the pass's candidate tiles must cover every disjunct's class offsets
            order = merged_residue(groups[key].order, order)
        groups.setdefault(key, _Group(order, []))
        groups[key].order = order
        groups[key].rules.append(part)
    return list(groups.values())


def _passes(layout: BlockLayout, kept: list[Rule], split: list[_Group]) -> list[Pass]:
    """Each split group minus every earlier pass, then token order for the kept parts minus them all.

    Lowered passes go first so that their own tiles stay full where their order makes them
    contiguous; the token-order pass, whose tiles are laid out exactly whatever the rule, takes
    the remainder.
    """
    passes: list[Pass] = []
    earlier: list[Rule] = []
    for group in split:
        rule = group.rule if not earlier else DifferenceRule([group.rule, union_of(earlier)])
        passes.append(_lowered(rule, group.order, layout))
        earlier.append(group.rule)
    if kept:
        rest = union_of(kept)
        rule = rest if not earlier else DifferenceRule([rest, union_of(earlier)])
        passes.append(identity_pass(rule, layout.grid, "the parts that ask for no other order"))
    return passes


def _lowered(rule: Rule, order: Order, layout: BlockLayout) -> Pass:
    """The pass of `rule` in `order`; a tiled order picks its box shape by predicted work."""
    if order.kind == "tiled":
        return tiled_pass(rule, order, layout.grid, order.why, lambda p: predicted_work([p], layout.grid.n))
    return lowered_pass(rule, order, layout, order.why)


def pass_tiles(layout: BlockLayout) -> list[tuple[int, int]]:
    """Tile shapes split passes may use: the layout's own, and PASS_TILE × PASS_TILE when that is
    smaller (a band or a residue class much narrower than a 128-wide tile wastes most of it) and its
    grid stays within MAX_TILE_ROWS (the user's larger tiles may be what lets a huge n compile)."""
    own = (layout.grid.block_m, layout.grid.block_n)
    small = (min(own[0], PASS_TILE), min(own[1], PASS_TILE))
    fits = -(-layout.grid.n // min(small)) <= MAX_TILE_ROWS
    return [own] if small == own or not fits else [own, small]


def _retiled_tiles(layout: BlockLayout, shape: tuple[int, int]) -> int:
    """An upper bound on the tiles `layout` stores on `shape` tiles (each of its tiles splits into
    at most this many), computed before building that layout."""
    bm, bn = layout.grid.block_m, layout.grid.block_n
    return layout.nnz * -(-bm // shape[0]) * -(-bn // shape[1])


def plan_schedule(layout: BlockLayout, mode: str = "auto") -> Schedule:
    """The schedule of one head pattern: the single pass, or the cheapest greedy split."""
    if mode not in SCHEDULE_MODES:
        raise MaskcError(f"schedule must be one of {', '.join(SCHEDULE_MODES)}; got {mode!r}")
    single = identity_pass(layout.rule, layout.grid, "token order", layout)
    single_work = predicted_work([single], layout.grid.n)
    best = Schedule((single,), mode, single_work, single_work, layout_tile=(layout.grid.block_m, layout.grid.block_n))
    if mode == "single":
        return best
    if layout.rule.dynamic:
        best.considered = ("the pattern is decided at run time: single pass",)
        return best
    groups = _groups(layout.rule, layout.grid.n)
    considered: list[str] = []
    shapes = pass_tiles(layout)
    if all(g.order.kind == "identity" for g in groups):
        # nothing to lower: only token order on smaller tiles, when that layout stays small enough
        shapes = [shape for shape in shapes[1:] if _retiled_tiles(layout, shape) <= MAX_RETILED_TILES]
        if not shapes:
            best.considered = ("no part asks for another order",)
            return best
    for shape in shapes:
        base = layout if shape == (layout.grid.block_m, layout.grid.block_n) else None
        base = base or build_layout(layout.rule, TileGrid(layout.grid.n, *shape))
        split = _greedy_split(base, groups, best, mode)
        considered += split.considered
        if split.predicted_work < best.predicted_work or (mode == "split" and best.single):
            best = split
    best.considered = tuple(considered)
    for p in best.passes:
        p.in_place = p.gathered_rows() > 0 and reads_in_place(p, layout.grid.n)
    return best


def _greedy_split(layout: BlockLayout, groups: list[_Group], single: Schedule, mode: str) -> Schedule:
    """Parts split out one by one on `layout`'s tiles, each kept when it lowers the prediction
    (every one in mode "split")."""
    kept = [rule for g in groups if g.order.kind == "identity" for rule in g.rules]
    candidates = [g for g in groups if g.order.kind != "identity"]
    tiles = f"{layout.grid.block_m} x {layout.grid.block_n} tiles"
    best, considered, split = single, [], []
    if not candidates and (layout.grid.block_m, layout.grid.block_n) != single.layout_tile:
        retiled = [identity_pass(layout.rule, layout.grid, f"token order on {tiles}", layout)]
        work = predicted_work(retiled, layout.grid.n)
        take = work < best.predicted_work
        considered.append(
            f"token order on {tiles}: predicted {work:,} vs {best.predicted_work:,}: "
            f"{'taken' if take else 'kept on the spec tiles'}"
        )
        if take:
            best = Schedule(tuple(retiled), mode, single.single_work, work, layout_tile=single.layout_tile)
    for group in candidates:
        others = [rule for g in candidates if g is not group and g not in split for rule in g.rules]
        passes = _passes(layout, kept + others, split + [group])
        work = predicted_work(passes, layout.grid.n)
        label = group.order.kind + (f" mod {group.order.modulus}" if group.order.modulus > 1 else "")
        take = work < best.predicted_work or mode == "split"
        verdict = "taken" if take else "kept in token order"
        considered.append(
            f"{label} for {' | '.join(r.describe() for r in group.rules)} on {tiles}: "
            f"predicted {work:,} vs {best.predicted_work:,}: {verdict}"
        )
        if take:
            split.append(group)
            best = Schedule(tuple(passes), mode, single.single_work, work, layout_tile=single.layout_tile)
    if best is single:
        best = Schedule(single.passes, mode, single.single_work, single.predicted_work, layout_tile=single.layout_tile)
    best.considered = tuple(considered)
    return best


def schedule_of(pattern: CompiledPattern, mode: str | None = None) -> tuple[Schedule, ...]:
    """The schedule of each of the pattern's layouts (computed once per mode)."""
    mode = pattern.schedule_mode if mode is None else mode
    if mode not in pattern._schedules:
        pattern._schedules[mode] = tuple(plan_schedule(layout, mode) for layout in pattern.layouts)
    return pattern._schedules[mode]


def per_head_kernel_work(pattern: CompiledPattern, schedules: tuple[Schedule, ...]) -> float:
    """Kernel work per head, averaged over heads (as `stats` averages its figures)."""
    return sum(schedules[int(k)].kernel_work() for k in pattern.head_layout) / pattern.heads


def schedule_summary(pattern: CompiledPattern, schedules: tuple[Schedule, ...]) -> dict[str, object]:
    """`passes` (one object per pass, with the layout it schedules) and `kernel_work`, for --json."""
    passes = [
        {"layout": k, "pass": index, **p.as_dict()}
        for k, schedule in enumerate(schedules)
        for index, p in enumerate(schedule.passes)
    ]
    return {
        "schedule": schedules[0].mode,
        "passes": passes,
        "kernel_work": per_head_kernel_work(pattern, schedules),
    }


def schedule_lines(pattern: CompiledPattern, schedules: tuple[Schedule, ...]) -> list[str]:
    """What `maskc compile` prints: each layout's passes, their tiles and predicted work."""
    active = None if pattern.dynamic else sum(pattern.layouts[int(k)].element_count() for k in pattern.head_layout)
    work = per_head_kernel_work(pattern, schedules)
    ratio = "" if active is None else f" ({work * pattern.heads / max(active, 1):.2f}x the active pairs)"
    out = [f"schedule       {schedules[0].mode}: kernel work {work:,.0f} pairs per head{ratio}"]
    for k, schedule in enumerate(schedules):
        prefix = f"[{k}] " if len(schedules) > 1 else ""
        out.append(
            f"  {prefix}predicted {schedule.predicted_work:,} vs single pass {schedule.single_work:,}"
            f" ({len(schedule.passes)} pass{'es' if len(schedule.passes) != 1 else ''})"
        )
        out += [f"  {prefix}pass {index}  {p.describe()}" for index, p in enumerate(schedule.passes)]
    return out


def schedule_reasons(pattern: CompiledPattern, schedules: tuple[Schedule, ...]) -> list[str]:
    """Why each pass was chosen: every lowering the cost model weighed, its prediction and verdict."""
    out = []
    for k, schedule in enumerate(schedules):
        heads = [h for h, layout in enumerate(pattern.head_layout) if layout == k]
        label = f"heads {format_ranges(heads)}: " if len(schedules) > 1 else ""
        out.append(
            f"{label}{len(schedule.passes)} pass(es), kernel work {schedule.kernel_work():,} pairs "
            f"(single pass: {schedule.single_work:,})"
        )
        out += [f"  considered {line}" for line in schedule.considered]
        in_place = "; the Triton kernels read its order in place"
        for i, p in enumerate(schedule.passes):
            out.append(f"  pass {i}: {p.label}: {p.reason}{in_place if p.in_place else ''}")
    return out
