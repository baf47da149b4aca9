"""The interval engine: exact reachability for local patterns plus a few hub tokens, in O(n) per layer.

Model. Pick a small set X of hub tokens: every token of a `global`/`sink` token set, plus any row
whose own neighbourhood is not an interval. Number the other m tokens ("core" tokens) 0 … m−1 in
order (their rank). In a layer, a core token u hears core token v when the layer's rule holds
for them; every token-set leaf is identically false between core tokens, so that core rule is the
layer's rule with those leaves replaced by "empty". The engine applies when, in every layer:

(1) each core row's core neighbourhood, with the row itself added (the residual), is an interval
    [lo(u), hi(u)] of ranks, and
(2) lo and hi are non-decreasing in u.

Lemma (core image). For ranks a ≤ b, the core tokens that hear some rank in [a, b], together with
[a, b] itself, form the interval [G(a), F(b)], where F(b) = max{u : lo(u) ≤ b} and
G(a) = min{u : hi(u) ≥ a}.
Proof: u hears [a, b] (or lies in it) iff [lo(u), hi(u)] meets [a, b] (by (1), and u ∈ [lo(u), hi(u)])
iff lo(u) ≤ b and hi(u) ≥ a. By (2) the first condition holds exactly on a prefix [0, F(b)] and
the second exactly on a suffix [G(a), m−1]; their intersection is [G(a), F(b)], and it contains
[a, b] because lo(b) ≤ b and hi(a) ≥ a. ∎

So a single token's information spreads over the core as an interval whose ends move by the
monotone maps F and G: after layers 1 … l, [G_l(…G_1(u)), F_l(…F_1(u))].

Hubs. A path from core source j either stays in the core, or has a first hub x, entered at some
layer e from a core token that j's core interval held one layer before (x hears it). Every later
position of such a path lies in H(x, e) = what {x} reaches through layers e+1 … l, and H(x, e)
only grows as e gets earlier (residual). Hence, exactly,

    reach_l(j) = core interval of j  ∪  ⋃_x H(x, e_x(j)),   e_x(j) = first entry layer of x (if any),

and sources with equal entry vectors share the hub part. Hub sets and hub sources are propagated
as plain sets with the exact one-layer image: core runs mapped by the lemma, plus every token
that attends a reached hub, plus every hub that attends a reached token.

Monotonicity gives one more saving: F∘…∘F and G∘…∘G are non-decreasing, so among sources that
no hub ever hears (all of them when there are no hubs) only the first and the last need to be
followed: every such source reaches everything iff those two do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from maskc.grid import group_ids
from maskc.ir import BlockLayout
from maskc.ir.build import build_layout
from maskc.reach.sets import runs
from maskc.reach.stack import LayerPattern, LayerStack
from maskc.rules import (
    BandRule,
    EmptyRule,
    Rule,
    TokenSet,
    TokenSetRule,
    combine_keys,
    evaluate_tiles,
    rewrite,
    tile_classes,
)

#: Bound on hubs² · n: each layer touches every hub set once per hub.
HUB_WORK_LIMIT = 1 << 28
#: Bound on the number of (source group × n) cells examined per completeness check.
GROUP_WORK_LIMIT = 1 << 28
#: Partial tiles whose per-row extents are computed at once.
_TILES_PER_CHUNK = 1 << 14


class NotIntervalShapedError(Exception):
    """The interval model does not describe this stack; the reason says why."""


def row_extents(layout: BlockLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query row: how many keys it attends, the first and the last (n and −1 when none). Exact.

    Full tiles contribute their column range to every row of their tile row; partial tiles are
    evaluated once per class of identical tiles.
    """
    grid, n = layout.grid, layout.grid.n
    count = np.zeros(n, dtype=np.int64)
    first = np.full(n, n, dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)
    rows, cols, full = layout.tile_rows(), layout.col_idx.astype(np.int64), layout.full
    fr, fc = rows[full], cols[full]
    if len(fr):
        tile_count = np.zeros(grid.row_tiles, dtype=np.int64)
        tile_first = np.full(grid.row_tiles, n, dtype=np.int64)
        tile_last = np.full(grid.row_tiles, -1, dtype=np.int64)
        np.add.at(tile_count, fr, grid.col_last(fc) - grid.col_first(fc) + 1)
        np.minimum.at(tile_first, fr, grid.col_first(fc))
        np.maximum.at(tile_last, fr, grid.col_last(fc))
        owner = np.arange(n) // grid.block_m
        count += tile_count[owner]
        first, last = tile_first[owner], tile_last[owner]
    partial = np.flatnonzero(~full)
    for lo in range(0, len(partial), _TILES_PER_CHUNK):
        chunk = partial[lo : lo + _TILES_PER_CHUNK]
        r, c = rows[chunk], cols[chunk]
        reps, inverse = tile_classes(layout.rule, grid, r, c)
        masks = evaluate_tiles(layout.rule, grid, r[reps], c[reps])
        k_count = masks.sum(axis=2)[inverse]
        k_first = masks.argmax(axis=2)[inverse]
        k_last = grid.block_n - 1 - masks[:, :, ::-1].argmax(axis=2)[inverse]
        row_ids = grid.row_first(r)[:, None] + np.arange(grid.block_m)[None, :]
        hit = k_count > 0
        at = row_ids[hit]
        np.add.at(count, at, k_count[hit])
        np.minimum.at(first, at, (grid.col_first(c)[:, None] + k_first)[hit])
        np.maximum.at(last, at, (grid.col_first(c)[:, None] + k_last)[hit])
    return count, first, last


def _members(tokens: TokenSet, n: int, limit: int) -> np.ndarray:
    """Positions of a token set, refusing (NotIntervalShapedError) sets larger than `limit`."""
    if tokens.positions is not None:
        out = tokens.positions
    elif tokens.first is not None:
        out = np.arange(min(tokens.first, limit + 1))
    else:
        out = np.arange(tokens.offset, n, tokens.every)[: limit + 1]
    if len(out) > limit:
        raise NotIntervalShapedError(f"a token set of more than {limit} hub tokens")
    return out.astype(np.int64)


def without_token_sets(rule: Rule) -> Rule:
    """The rule between non-members of its token sets: every token-set leaf replaced by "empty"."""
    return rewrite(rule, leaf=_emptied_token_set)


def _emptied_token_set(leaf: Rule) -> Rule | None:
    return EmptyRule(leaf.origin) if isinstance(leaf, TokenSetRule) else None


def _check_local(rule: Rule) -> None:
    """Only unit-step bands (windows, blocks, causal, dense) and empty leaves give interval rows."""
    for leaf in rule.leaves():
        if isinstance(leaf, EmptyRule) or (isinstance(leaf, BandRule) and leaf.step == 1):
            continue
        raise NotIntervalShapedError(f"{leaf.origin or 'a leaf'} ({leaf.describe()}) is not a contiguous band")


@dataclass
class CoreLayer:
    """One layer pattern in the interval model."""

    #: Core rows' neighbourhoods (residual included) as rank intervals [lo, hi].
    lo: np.ndarray
    hi: np.ndarray
    #: F(b) = max{u : lo(u) ≤ b} and G(a) = min{u : hi(u) ≥ a}, for every rank.
    grow_right: np.ndarray
    grow_left: np.ndarray
    #: Per hub: the positions it attends, the ranks of the core ones, the positions attending it.
    hub_rows: list[np.ndarray]
    hub_row_ranks: list[np.ndarray]
    hub_cols: list[np.ndarray]


@dataclass
class IntervalModel:
    """Hubs, core ranks and one CoreLayer per distinct layer pattern."""

    n: int
    hubs: np.ndarray
    core: np.ndarray
    #: Non-hub positions below each position: rank of a core token, and rank bounds of a range.
    below: np.ndarray
    layers: list[CoreLayer] = field(default_factory=list)

    @property
    def m(self) -> int:
        return len(self.core)

    def image(self, reached: np.ndarray, pattern: int) -> np.ndarray:
        """The exact set reached one layer later (boolean over positions)."""
        layer = self.layers[pattern]
        out = reached.copy()
        core = reached[self.core]
        if core.any():
            starts, ends = runs(core)
            delta = np.zeros(self.m + 1, dtype=np.int64)
            np.add.at(delta, layer.grow_left[starts], 1)
            np.add.at(delta, layer.grow_right[ends] + 1, -1)
            out[self.core] |= np.cumsum(delta[:-1]) > 0
        for k, x in enumerate(self.hubs):
            if reached[x]:
                out[layer.hub_cols[k]] = True
            elif reached[layer.hub_rows[k]].any():
                out[x] = True
        return out

    def core_positions(self, a: int, b: int) -> np.ndarray:
        return self.core[a : b + 1]


def _rank_intervals(
    extents: tuple[np.ndarray, np.ndarray, np.ndarray], core: np.ndarray, below: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, broken) per core rank: the neighbourhood with the row itself, and rows where that is no interval."""
    count, first, last = (e[core] for e in extents)
    rank = np.arange(len(core))
    has = count > 0
    lo_core = np.where(has, below[np.minimum(first, len(below) - 1)], rank)
    hi_core = np.where(has, below[np.minimum(last + 1, len(below) - 1)] - 1, rank)
    empty = lo_core > hi_core
    lo_core, hi_core = np.where(empty, rank, lo_core), np.where(empty, rank, hi_core)
    broken = (rank < lo_core - 1) | (rank > hi_core + 1)
    return np.minimum(lo_core, rank), np.maximum(hi_core, rank), broken


def _core_layer(
    pattern: LayerPattern, lo: np.ndarray, hi: np.ndarray, hubs: np.ndarray, below: np.ndarray
) -> CoreLayer:
    n = len(below) - 1
    ranks = np.arange(len(lo))
    everyone = np.arange(n)
    rows, row_ranks, cols = [], [], []
    for x in hubs:
        attended = np.flatnonzero(pattern.rule.mask(np.full(n, x), everyone))
        rows.append(attended)
        core = attended[below[attended + 1] > below[attended]]
        row_ranks.append(below[core])
        cols.append(np.flatnonzero(pattern.rule.mask(everyone, np.full(n, x))))
    return CoreLayer(
        lo=lo,
        hi=hi,
        grow_right=np.searchsorted(lo, ranks, side="right") - 1,
        grow_left=np.searchsorted(hi, ranks, side="left"),
        hub_rows=rows,
        hub_row_ranks=row_ranks,
        hub_cols=cols,
    )


def build_interval_model(stack: LayerStack) -> IntervalModel:
    """The interval model of a stack, or NotIntervalShapedError with the reason it does not apply."""
    n = stack.n
    hub_limit = max(1, int((HUB_WORK_LIMIT // n) ** 0.5))
    tokens: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    extents = []
    for pattern in stack.patterns:
        for leaf in pattern.rule.leaves():
            if isinstance(leaf, TokenSetRule):
                tokens.append(_members(leaf.tokens, n, hub_limit))
        core_rule = without_token_sets(pattern.rule)
        _check_local(core_rule)
        layout = pattern.layout if core_rule is pattern.rule else build_layout(core_rule, pattern.layout.grid)
        count, first, last = row_extents(layout)
        tokens.append(np.flatnonzero((count > 0) & (count != last - first + 1)))
        extents.append((count, first, last))
    is_hub = np.zeros(n, dtype=bool)
    is_hub[np.concatenate(tokens)] = True
    while True:
        if is_hub.sum() > hub_limit:
            raise NotIntervalShapedError(f"{int(is_hub.sum())} tokens do not fit an interval model (limit {hub_limit})")
        core = np.flatnonzero(~is_hub)
        below = np.concatenate(([0], np.cumsum(~is_hub)))
        shapes = [_rank_intervals(e, core, below) for e in extents]
        broken = np.logical_or.reduce([s[2] for s in shapes]) if shapes else np.zeros(len(core), dtype=bool)
        if not broken.any():
            break
        is_hub[core[broken]] = True
    for pattern, (lo, hi, _) in zip(stack.patterns, shapes):
        if np.any(np.diff(lo) < 0) or np.any(np.diff(hi) < 0):
            raise NotIntervalShapedError(f"the neighbourhoods of {pattern.rule.describe()} do not move monotonically")
    hubs = np.flatnonzero(is_hub)
    layers = [_core_layer(p, lo, hi, hubs, below) for p, (lo, hi, _) in zip(stack.patterns, shapes)]
    return IntervalModel(n=n, hubs=hubs, core=core, below=below, layers=layers)


def _tracked_sources(model: IntervalModel, causal: bool) -> np.ndarray:
    """Core ranks whose reach must be followed one by one; the others are represented by an extreme one.

    A source that no hub can ever hear keeps an empty hub part, so among such sources the one with
    the smallest core interval end (the first, as F∘…∘F is non-decreasing) and the one with the
    largest start (the last) are the worst: each fails whenever any of them does, and the first
    one is the first to fail. Without hub rows holding core keys no source enters a hub. In a
    causal pattern no row hears a later key, so interval starts never move and a source after
    every core key of every hub row never enters one either.
    """
    m = model.m
    rows = [ranks for layer in model.layers for ranks in layer.hub_row_ranks if len(ranks)]
    if not rows:
        reach_hubs = 0
    elif causal:
        reach_hubs = max(int(ranks[-1]) for ranks in rows) + 1
    else:
        reach_hubs = m
    rest = np.arange(reach_hubs, m)
    extremes = np.unique(rest[[0, -1]]) if len(rest) else rest
    return np.concatenate([np.arange(min(reach_hubs, m)), extremes]).astype(np.int64)


class IntervalSearch:
    """The reach state of every source under the interval model (see the module docstring)."""

    def __init__(self, model: IntervalModel, stack: LayerStack) -> None:
        self.model, self.stack = model, stack
        hubs = model.hubs
        self.sources = _tracked_sources(model, stack.causal)
        self.a, self.b = self.sources.copy(), self.sources.copy()
        #: entry[k, s]: the layer at which source s's core interval first fed hub k (0: not yet).
        self.entry = np.zeros((len(hubs), len(self.sources)), dtype=np.int64)
        #: (hub index, entry layer) → index into self.sets; equal sets share an index.
        self.slot: dict[tuple[int, int], int] = {}
        self.sets: list[np.ndarray] = []
        self.hub_sources = [self._singleton(x) for x in hubs]
        #: Per set: the pattern whose image left it unchanged (it stays so while that pattern repeats).
        self.sets_settled: list[int | None] = []
        self.hubs_settled: list[int | None] = [None] * len(hubs)
        self.recorded: tuple[int, int, np.ndarray] | None = None
        self._group_cache: list[tuple[np.ndarray, np.ndarray]] | None = None

    def _singleton(self, x: int) -> np.ndarray:
        out = np.zeros(self.model.n, dtype=bool)
        out[x] = True
        return out

    def apply(self, layer: int, pattern: int) -> bool:
        model, core = self.model, self.model.layers[pattern]
        changed = self._advance(self.sets, self.sets_settled, pattern)
        for k, ranks in enumerate(core.hub_row_ranks):
            pos = np.searchsorted(ranks, self.a)
            hit = pos < len(ranks)
            hit[hit] = ranks[pos[hit]] <= self.b[hit]
            fresh = hit & (self.entry[k] == 0)
            if fresh.any():
                self.entry[k, fresh] = layer
                self._group_cache = None
                self.slot[(k, layer)] = len(self.sets)
                self.sets.append(self._singleton(model.hubs[k]))
                self.sets_settled.append(None)
                changed = True
        a, b = core.grow_left[self.a], core.grow_right[self.b]
        changed |= not (np.array_equal(a, self.a) and np.array_equal(b, self.b))
        self.a, self.b = a, b
        changed |= self._advance(self.hub_sources, self.hubs_settled, pattern)
        self._share_equal_sets()
        return changed

    def _advance(self, sets: list[np.ndarray], settled: list[int | None], pattern: int) -> bool:
        """Replace each set by its image; True when one grew. A set that `pattern` left unchanged is skipped."""
        changed = False
        for k, old in enumerate(sets):
            if settled[k] == pattern:
                continue
            sets[k] = self.model.image(old, pattern)
            same = np.array_equal(sets[k], old)
            settled[k] = pattern if same else None
            changed |= not same
        return changed

    def _share_equal_sets(self) -> None:
        """Point equal hub sets at one copy: they evolve identically from here on."""
        seen: dict[bytes, int] = {}
        remap = {}
        kept: list[np.ndarray] = []
        flags: list[int | None] = []
        for k, s in enumerate(self.sets):
            key = np.packbits(s).tobytes()
            if key not in seen:
                seen[key] = len(kept)
                kept.append(s)
                flags.append(self.sets_settled[k])
            remap[k] = seen[key]
        self.sets, self.sets_settled = kept, flags
        self.slot = {key: remap[k] for key, k in self.slot.items()}

    def _groups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(entry vector, tracked sources having it) for each distinct entry vector; cached until entries change."""
        if self._group_cache is None:
            count = len(self.sources)
            if self.entry.shape[0] == 0 or not self.entry.any():
                self._group_cache = [(np.zeros(self.entry.shape[0], dtype=np.int64), np.arange(count))]
            else:
                first, group, sizes = group_ids(combine_keys(list(self.entry)))
                if len(first) * self.model.n > GROUP_WORK_LIMIT:
                    raise NotIntervalShapedError(f"{len(first)} distinct hub entry patterns are too many to compare")
                members = np.split(np.argsort(group, kind="stable"), np.cumsum(sizes)[:-1])
                self._group_cache = [(self.entry[:, f], m) for f, m in zip(first, members)]
        return self._group_cache

    def _hub_part(self, vector: np.ndarray) -> np.ndarray:
        out = np.zeros(self.model.n, dtype=bool)
        for k in np.flatnonzero(vector):
            out |= self.sets[self.slot[(int(k), int(vector[k]))]]
        return out

    def _missed(self, vector: np.ndarray) -> tuple[np.ndarray, int, int]:
        """What a group's hub part misses: (hub positions, first and last core rank; −1, −1 when none)."""
        model = self.model
        if not vector.any():
            return model.hubs, (0 if model.m else -1), model.m - 1
        missed = ~self._hub_part(vector)
        core = np.flatnonzero(missed[model.core])
        return model.hubs[missed[model.hubs]], (int(core[0]) if len(core) else -1), (int(core[-1]) if len(core) else -1)

    def _failing(self) -> tuple[np.ndarray, np.ndarray]:
        """(tracked core sources that miss a target, hubs whose own information misses a target)."""
        model, causal = self.model, self.stack.causal
        bad = np.zeros(len(self.sources), dtype=bool)
        position = model.core[self.sources]
        for vector, members in self._groups():
            hubs, first, last = self._missed(vector)
            a, b = self.a[members], self.b[members]
            if causal:
                ok = position[members] > (hubs.max() if len(hubs) else -1)
                if last >= 0:  # missed core tokens before j are no targets, and b ≥ rank(j) exceeds them
                    ok &= b >= last
            else:
                ok = np.full(len(members), not len(hubs))
                if last >= 0:
                    ok &= (a <= first) & (b >= last)
            bad[members] = ~ok
        hub_bad = np.array(
            [not s[self.stack.targets(int(x))[0] :].all() for x, s in zip(model.hubs, self.hub_sources)], dtype=bool
        )
        return bad, hub_bad

    def complete(self) -> bool:
        bad, hub_bad = self._failing()
        return not bad.any() and not hub_bad.any()

    def reach_of(self, index: int) -> np.ndarray:
        """Reach set (boolean over positions) of tracked core source number `index`."""
        out = self._hub_part(self.entry[:, index]) if self.entry.shape[0] else np.zeros(self.model.n, dtype=bool)
        out[self.model.core_positions(int(self.a[index]), int(self.b[index]))] = True
        return out

    def record(self, layer: int) -> None:
        """Keep the first failing source (by position) and its reach set."""
        bad, hub_bad = self._failing()
        candidates = []
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            candidates.append((int(self.model.core[self.sources[index]]), index, False))
        if hub_bad.any():
            k = int(np.flatnonzero(hub_bad)[0])
            candidates.append((int(self.model.hubs[k]), k, True))
        j, index, is_hub = min(candidates)
        reach = self.hub_sources[index].copy() if is_hub else self.reach_of(index)
        self.recorded = (layer, j, reach)
