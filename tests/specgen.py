"""Random specs for property tests, and an independent dense evaluator of the spec language.

`brute_force_mask` evaluates a spec dict element by element from the definitions in the
spec reference (README), sharing no code with the compiler except the seeded random draws,
which are part of the definition of the `random` primitive. Sizes given as expressions in n are
evaluated here by a separate reading of the README's grammar (`size_value`).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import strategies as st

from maskc.rules import draw_distinct
from maskc.rules.random import draw_among

POWERS_OF_TWO = [1, 2, 4, 8, 16, 32, 64]
TILE_SIDES = [16, 32, 64, 128]


# ----------------------------------------------------------------------------- evaluator


#: Parameters that are sizes: a whole number or an expression in n.
SIZES = {"before", "after", "size", "dilation", "every", "first", "offset", "last", "count", "per_row", "width"}


def _int_sqrt(x: int) -> tuple[int, int]:
    """(⌊√x⌋, ⌈√x⌉) by search from the float estimate."""
    r = int(math.sqrt(x))
    while r * r > x:
        r -= 1
    while (r + 1) * (r + 1) <= x:
        r += 1
    return r, r if r * r == x else r + 1


def _int_log2(x: int) -> tuple[int, int]:
    """(⌊log2 x⌋, ⌈log2 x⌉) by counting doublings."""
    k = 0
    while 2 ** (k + 1) <= x:
        k += 1
    return k, k if 2**k == x else k + 1


class _Reader:
    """Recursive descent over the tokens of an expression in n. Every node reads as (down, up): a
    division, sqrt or log2 rounded down and rounded up; everything else has down == up."""

    def __init__(self, text: str, n: int) -> None:
        self.tokens = re.findall(r"//|\d+|[a-z][a-z0-9]*|[-+*/%(),]", text)
        self.n = n

    def take(self, expected: str | None = None) -> str:
        tok = self.tokens.pop(0)
        assert expected is None or tok == expected, (tok, expected)
        return tok

    def expr(self) -> tuple[int, int]:
        down, up = self.term()
        while self.tokens and self.tokens[0] in "+-":
            sign = 1 if self.take() == "+" else -1
            down = up = down + sign * self.term()[0]
        return down, up

    def term(self) -> tuple[int, int]:
        down, up = self.unary()
        while self.tokens and self.tokens[0] in ("*", "/", "//", "%"):
            op, right = self.take(), self.unary()[0]
            if op == "*":
                down = up = down * right
            elif op == "%":
                down = up = down % right
            else:
                exact = Fraction(down, right)
                down, up = math.floor(exact), math.ceil(exact)
        return down, up

    def unary(self) -> tuple[int, int]:
        if self.tokens[0] in "+-":
            sign = 1 if self.take() == "+" else -1
            value = self.unary()[0] * sign
            return value, value
        return self.atom()

    def atom(self) -> tuple[int, int]:
        tok = self.take()
        if tok == "(":
            value = self.expr()
            self.take(")")
            return value
        if tok == "n":
            return self.n, self.n
        if tok.isdigit():
            return int(tok), int(tok)
        self.take("(")
        args = [self.expr()]
        while self.tokens[0] == ",":
            self.take()
            args.append(self.expr())
        self.take(")")
        if tok == "ceil":
            return args[0][1], args[0][1]
        if tok == "floor":
            return args[0][0], args[0][0]
        if tok in ("min", "max"):
            value = (min if tok == "min" else max)(a[0] for a in args)
            return value, value
        return (_int_sqrt if tok == "sqrt" else _int_log2)(args[0][0])


def size_value(value: Any, n: int) -> int:
    """A size parameter at n: a whole number as it is, an expression by the README's rounding rules."""
    if isinstance(value, int):
        return value
    reader = _Reader(value, n)
    down, _ = reader.expr()
    assert not reader.tokens, f"unread: {reader.tokens}"
    return down


def _token_set(params: dict[str, Any], n: int) -> np.ndarray:
    member = np.zeros(n, dtype=bool)
    if "tokens" in params:
        member[params["tokens"]] = True
    elif "first" in params:
        member[: params["first"]] = True
    elif "last" in params:
        member[np.arange(n) % params["every"] >= params["every"] - params["last"]] = True
    else:
        member[np.arange(n) % params["every"] == params.get("offset", 0)] = True
    return member


def _random_mask(
    params: dict[str, Any], n: int, block: int, i: np.ndarray, j: np.ndarray, covered: np.ndarray | None = None
) -> np.ndarray:
    """The drawn table as a mask; `covered` (units × units) is what the excluded siblings cover."""
    unit = block if params.get("granularity", "block") == "block" else 1
    units = -(-n // unit)
    rng = np.random.default_rng([params.get("seed", 0), n, block])
    if covered is None:
        table = draw_distinct(units, units, params["per_row"], rng)
    else:
        ptr = np.concatenate([[0], np.cumsum(covered.sum(axis=1))]).astype(np.int64)
        table = draw_among(params["per_row"], ptr, np.nonzero(covered)[1].astype(np.int64), units, rng)
    chosen = np.zeros((units, units), dtype=bool)
    chosen[np.repeat(np.arange(units), params["per_row"]), table.reshape(-1)] = True
    return chosen[i // unit, j // unit]


def grid_cells(grid: dict[str, Any]) -> np.ndarray:
    """(cells, ndim) coordinates of the grid's cells in storage order, enumerated cell by cell."""
    shape = grid["shape"]
    order = grid.get("order", "row_major")
    if order == "row_major":
        return np.array(list(np.ndindex(*shape)), dtype=np.int64)
    tile = order["tiles"]
    counts = [s // t for s, t in zip(shape, tile)]
    cells = [
        [o * t + x for o, t, x in zip(outer, tile, inner)]
        for outer in np.ndindex(*counts)
        for inner in np.ndindex(*tile)
    ]
    return np.array(cells, dtype=np.int64)


def natten_axis_rule(q: np.ndarray, k: np.ndarray, size: int, kernel: int, dilation: int, causal: bool) -> np.ndarray:
    """NATTEN's per-axis rule as its FlexAttention mask states it (stride 1): dilation groups, the
    group's corrected length, centre clamped with left k // 2 and right k // 2 + (k mod 2 − 1)."""
    qd, kd = q // dilation, k // dilation
    qg, kg = q % dilation, k % dilation
    padding = 1 - ((qg + (dilation - (size % dilation))) // dilation)
    length = size // dilation + padding
    if causal:
        return (qd - kd >= 0) & (qd - kd < kernel) & (qg == kg)
    left, right = kernel // 2, kernel // 2 + (kernel % 2 - 1)
    centre = np.minimum(np.maximum(qd, left), length - 1 - right)
    w0, w1 = centre - kd, kd - centre
    return (((w0 >= 0) & (w0 <= left)) | ((w1 >= 0) & (w1 <= right))) & (qg == kg)


def sta_axis_rule(q: np.ndarray, k: np.ndarray, size: int, tile: int, kernel: int) -> np.ndarray:
    """STA's per-axis rule as attention-gym's sta.py states it, on tile coordinates."""
    tiles, kt = size // tile, kernel // tile
    left, right = kt // 2, kt // 2 + (kt % 2 - 1)
    centre = np.minimum(np.maximum(q // tile, left), tiles - 1 - right)
    return (k // tile >= centre - left) & (k // tile <= centre + right)


def _grid_primitive(kind: str, p: dict[str, Any], grid: dict[str, Any], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    cells = grid_cells(grid)
    count = len(cells)
    qi, kj = np.minimum(i, count - 1), np.minimum(j, count - 1)
    out = (i < count) & (j < count)
    for a, size in enumerate(grid["shape"]):
        q, k = cells[qi, a], cells[kj, a]
        if kind == "neighborhood":
            d = p.get("dilation", [1] * len(grid["shape"]))[a]
            c = p.get("causal", [False] * len(grid["shape"]))[a]
            out = out & natten_axis_rule(q, k, size, p["kernel"][a], d, c)
        else:
            out = out & sta_axis_rule(q, k, size, p["tile"][a], p["kernel"][a])
    if p.get("text", "all") == "all":
        out = out | ((i < count) & (j >= count)) | (i >= count)
    return out


def covered_units(mask: np.ndarray, unit: int) -> np.ndarray:
    """(units, units): the unit blocks of an (n, n) mask in which every element holds."""
    units = -(-mask.shape[0] // unit)
    out = np.zeros((units, units), dtype=bool)
    for a in range(units):
        for b in range(units):
            out[a, b] = mask[a * unit : (a + 1) * unit, b * unit : (b + 1) * unit].all()
    return out


def _document_starts(docs: np.ndarray) -> np.ndarray:
    """Per position, the first position of its document, by a plain scan."""
    starts = np.zeros(len(docs), dtype=np.int64)
    for x in range(1, len(docs)):
        starts[x] = starts[x - 1] if docs[x] == docs[x - 1] else x
    return starts


def _per_document(kind: str, p: dict[str, Any], n: int, docs: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """sink / global with per: document: the token set on ranks within each document, inside it."""
    rank = np.arange(n) - _document_starts(docs)
    member = _token_set({"first": p["count"]} if kind == "sink" else p, n)[np.minimum(rank, n - 1)]
    same = docs[i] == docs[j]
    direction = "columns" if kind == "sink" else p.get("direction", "both")
    rows, cols = member[i] & np.ones_like(j, dtype=bool), member[j] & np.ones_like(i, dtype=bool)
    return same & {"both": rows | cols, "rows": rows, "columns": cols}[direction]


def _primitive(
    kind: str,
    p: dict[str, Any],
    n: int,
    block: int,
    i: np.ndarray,
    j: np.ndarray,
    grid: dict[str, Any] | None = None,
    docs: np.ndarray | None = None,
) -> np.ndarray:
    if kind == "document":
        return docs[i] == docs[j]
    if p.get("per") == "document":
        p = {key: size_value(value, n) if key in SIZES else value for key, value in p.items()}
        return _per_document(kind, p, n, docs, i, j)
    if kind in ("neighborhood", "tiles"):
        assert grid is not None
        return _grid_primitive(kind, p, grid, i, j)
    p = {key: size_value(value, n) if key in SIZES else value for key, value in p.items()}
    if kind == "dense":
        return np.ones((n, n), dtype=bool)
    if kind == "window":
        before, after = (p["size"] // 2, p["size"] // 2) if "size" in p else (p.get("before", 0), p.get("after", 0))
        unit = block if p.get("granularity", "token") == "block" else 1
        d, step = j // unit - i // unit, p.get("dilation", 1)
        return (d % step == 0) & (d >= -before * step) & (d <= after * step)
    if kind == "block_local":
        return i // p["size"] == j // p["size"]
    if kind == "stride":
        return (i - j) % p["every"] == 0
    if kind == "global":
        member = _token_set(p, n)
        rows, cols = member[i] & np.ones_like(j, dtype=bool), member[j] & np.ones_like(i, dtype=bool)
        return {"both": rows | cols, "rows": rows, "columns": cols}[p.get("direction", "both")]
    if kind == "sink":
        return (j < p["count"]) & np.ones_like(i, dtype=bool)
    if kind == "random":
        return _random_mask(p, n, block, i, j)
    if kind == "axial":
        w = p["width"]
        return (i // w == j // w) | (i % w == j % w)
    raise ValueError(f"no brute-force rule for {kind!r}")


def pattern_mask(
    node: Any, n: int, block: int, grid: dict[str, Any] | None = None, docs: np.ndarray | None = None
) -> np.ndarray:
    """Dense (n, n) mask of one pattern node in spec-file form (`docs`: document id per position)."""
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    if isinstance(node, list):
        node = {"union": node}
    ((kind, params),) = node.items()
    if kind in ("union", "intersect", "difference"):
        if kind == "union":
            return _union_mask(params, n, block, grid, docs)
        parts = [pattern_mask(child, n, block, grid, docs) for child in params]
        if kind == "intersect":
            return np.logical_and.reduce(parts)
        return parts[0] & ~parts[1]
    return np.broadcast_to(_primitive(kind, params or {}, n, block, i, j, grid, docs), (n, n)).copy()


def _union_mask(
    children: list[Any], n: int, block: int, grid: dict[str, Any] | None = None, docs: np.ndarray | None = None
) -> np.ndarray:
    """A union; a random entry with `exclude` draws among the unit blocks its named siblings leave uncovered."""
    out = np.zeros((n, n), dtype=bool)
    for child in children:
        ((kind, params),) = (child if isinstance(child, dict) else {"union": child}).items()
        excluded = (params or {}).get("exclude") if kind == "random" else None
        if not excluded:
            out |= pattern_mask(child, n, block, grid, docs)
            continue
        named = [c for c in children if isinstance(c, dict) and next(iter(c)) in excluded]
        cover = np.logical_or.reduce([pattern_mask(c, n, block, grid, docs) for c in named])
        unit = block if params.get("granularity", "block") == "block" else 1
        p = {key: size_value(value, n) if key in SIZES else value for key, value in params.items()}
        i, j = np.arange(n)[:, None], np.arange(n)[None, :]
        out |= _random_mask(p, n, block, i, j, covered_units(cover, unit))
    return out


def brute_force_mask(spec: dict[str, Any], n: int, docs: np.ndarray | None = None) -> np.ndarray:
    """(n, n) mask, or (heads, n, n) when the spec has head_patterns; `docs` for document primitives."""
    block = spec.get("block_size", 64)
    causal = np.tril(np.ones((n, n), dtype=bool)) if spec.get("causal", False) else np.ones((n, n), dtype=bool)
    grid = spec.get("grid")
    if not spec.get("head_patterns"):
        return pattern_mask(spec["pattern"], n, block, grid, docs) & causal
    per_head = []
    for h in range(spec["heads"]):
        node = next((e["pattern"] for e in spec["head_patterns"] if h in e["heads"]), spec["pattern"])
        per_head.append(pattern_mask(node, n, block, grid, docs) & causal)
    return np.stack(per_head)


# ----------------------------------------------------------------------------- strategies


@st.composite
def same_value(draw: st.DrawFn, v: int, n: int) -> int | str:
    """v, or an expression in n whose value at n is v (README rounding), to test both readings."""
    forms = [v, str(v), f"n - {n - v}", f"min(n, {v}) + 0", f"max({v}, {v} - 1)"]
    k = draw(st.integers(1, 9))
    forms += [f"{v * k} / {k}", f"ceil({v * k - draw(st.integers(0, k - 1))} / {k})", f"{v * k + k - 1} // {k}"]
    forms.append(f"floor(sqrt({v * v + draw(st.integers(0, 2 * v))}))")
    if v >= 1:
        forms.append(f"ceil(sqrt({v * v - draw(st.integers(0, 2 * v - 2))}))")
        forms.append(f"ceil(log2({2 ** (v - 1) + 1}))" if 1 < v <= 20 else f"{v} * (n % 1 + 1)")
    if v <= 20:
        forms.append(f"log2({2**v + draw(st.integers(0, 2**v - 1))})")
    return draw(st.sampled_from(forms))


def _sizes_as_expressions(draw: st.DrawFn, node: dict[str, Any], n: int) -> dict[str, Any]:
    """The primitive with some of its integer sizes written as expressions with the same value."""
    ((kind, params),) = node.items()
    if not params or draw(st.integers(0, 2)) != 0:
        return node
    return {kind: {k: draw(same_value(v, n)) if k in SIZES and isinstance(v, int) else v for k, v in params.items()}}


@st.composite
def primitives(draw: st.DrawFn, n: int, block: int) -> dict[str, Any]:
    """One static primitive whose parameters are valid at sequence length n; sizes sometimes expressions."""
    return _sizes_as_expressions(draw, draw(_plain_primitives(n, block)), n)


@st.composite
def _plain_primitives(draw: st.DrawFn, n: int, block: int) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(["dense", "window", "window", "block_local", "stride", "global", "sink", "random", "axial"])
    )
    small = st.integers(0, max(1, n // 2))
    if kind == "dense":
        return {"dense": {}}
    if kind == "window":
        params: dict[str, Any] = draw(
            st.one_of(
                st.fixed_dictionaries({"before": small, "after": small}),
                st.fixed_dictionaries({"size": small}),
                st.fixed_dictionaries({"before": small}),
            )
        )
        if draw(st.booleans()):
            params["dilation"] = draw(st.integers(1, 5))
        if draw(st.integers(0, 3)) == 0:
            params["granularity"] = "block"
            params = {k: (min(v, 3) if k in ("before", "after", "size") else v) for k, v in params.items()}
        return {"window": params}
    if kind == "block_local":
        return {"block_local": {"size": draw(st.integers(1, max(1, n)))}}
    if kind == "stride":
        return {"stride": {"every": draw(st.integers(1, max(1, n // 2)))}}
    if kind == "global":
        params = draw(
            st.one_of(
                st.fixed_dictionaries({"tokens": st.lists(st.integers(0, n - 1), min_size=1, max_size=4, unique=True)}),
                st.fixed_dictionaries({"first": st.integers(1, n)}),
                st.integers(1, max(1, n))
                .flatmap(
                    lambda every: st.fixed_dictionaries({"every": st.just(every), "offset": st.integers(0, every - 1)})
                )
                .filter(lambda p: p["offset"] < n),
                st.integers(1, max(1, n))
                .flatmap(lambda every: st.fixed_dictionaries({"every": st.just(every), "last": st.integers(1, every)}))
                .filter(lambda p: p["every"] - p["last"] < n),
            )
        )
        params["direction"] = draw(st.sampled_from(["both", "rows", "columns"]))
        return {"global": params}
    if kind == "sink":
        return {"sink": {"count": draw(st.integers(1, n))}}
    if kind == "random":
        granularity = draw(st.sampled_from(["block", "token"]))
        units = -(-n // (block if granularity == "block" else 1))
        return {
            "random": {
                "per_row": draw(st.integers(1, min(units, 4))),
                "seed": draw(st.integers(0, 3)),
                "granularity": granularity,
            }
        }
    return {"axial": {"width": draw(st.integers(1, max(1, n // 2)))}}


@st.composite
def patterns(draw: st.DrawFn, n: int, block: int, depth: int = 2) -> Any:
    """A pattern tree: a primitive, a combinator of patterns, or a bare list (union)."""
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(primitives(n, block))
    kind = draw(st.sampled_from(["union", "intersect", "difference", "list"]))
    size = 2 if kind == "difference" else draw(st.integers(1, 3))
    kids = [draw(patterns(n, block, depth - 1)) for _ in range(size)]
    if kind in ("union", "list") and draw(st.integers(0, 3)) == 0:
        kids.append(draw(_random_excluding(kids, n, block)))
    return kids if kind == "list" else {kind: kids}


@st.composite
def _random_excluding(draw: st.DrawFn, siblings: list[Any], n: int, block: int) -> dict[str, Any]:
    """A random entry that draws among what some of its siblings (by kind) leave uncovered."""
    kinds = sorted(
        {next(iter(s)) for s in siblings if isinstance(s, dict)} - {"random", "union", "intersect", "difference"}
    )
    granularity = draw(st.sampled_from(["block", "token"]))
    units = -(-n // (block if granularity == "block" else 1))
    params: dict[str, Any] = {
        "per_row": draw(st.integers(1, min(units, 4))),
        "seed": draw(st.integers(0, 3)),
        "granularity": granularity,
    }
    if kinds:
        params["exclude"] = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=len(kinds), unique=True))
    return {"random": params}


@st.composite
def spec_dicts(draw: st.DrawFn, max_n: int = 200, per_head: bool = True, layers: bool = False) -> tuple[dict, int]:
    """(spec in spec-file form, n): every static primitive and combinator, causal on and off."""
    n = draw(st.integers(1, max_n))
    block = draw(st.sampled_from(POWERS_OF_TWO))
    spec: dict[str, Any] = {
        "name": "random",
        "seq_len": n,
        "block_size": block,
        "causal": draw(st.booleans()),
        "pattern": draw(patterns(n, block)),
    }
    if per_head and draw(st.integers(0, 3)) == 0:
        heads = draw(st.integers(2, 4))
        chosen = draw(st.lists(st.integers(0, heads - 1), min_size=1, max_size=heads, unique=True))
        spec["heads"] = heads
        spec["head_patterns"] = [{"heads": chosen, "pattern": draw(patterns(n, block, depth=1))}]
    if layers and draw(st.booleans()):
        spec["layers"] = [draw(_layer_entries(n, block)) for _ in range(draw(st.integers(1, 3)))]
    return spec, n


@st.composite
def _layer_entries(draw: st.DrawFn, n: int, block: int) -> dict[str, Any]:
    """A `layers` entry: the spec's pattern, its own pattern, or a layer without attention."""
    count = draw(st.integers(1, 3))
    form = draw(st.sampled_from(["spec", "pattern", "recurrent", "identity"]))
    if form == "spec":
        return {"count": count}
    if form == "pattern":
        return {"count": count, "pattern": draw(patterns(n, block, depth=1))}
    return {"count": count, "mixer": form}


def tile_shapes() -> st.SearchStrategy[tuple[int, int]]:
    """IR tile shapes, square and rectangular."""
    return st.tuples(st.sampled_from(TILE_SIDES), st.sampled_from(TILE_SIDES))


@st.composite
def lowering_spec_dicts(draw: st.DrawFn, max_n: int = 160) -> tuple[dict, int]:
    """(spec, n) whose pattern is a union mixing the parts that ask for other token orders (strides,
    dilated windows, axial columns, global and sink sets) with windows, blocks and random tiles."""
    n = draw(st.integers(2, max_n))
    block = draw(st.sampled_from([8, 16, 32]))
    small = st.integers(0, max(1, n // 4))
    part = st.one_of(
        st.builds(lambda s: {"stride": {"every": s}}, st.integers(2, max(2, n // 2))),
        st.builds(
            lambda a, b, d: {"window": {"before": a, "after": b, "dilation": d}}, small, small, st.integers(2, 6)
        ),
        st.builds(lambda a, b: {"window": {"before": a, "after": b}}, small, small),
        st.builds(lambda w: {"axial": {"width": w}}, st.integers(2, max(2, n // 2))),
        st.builds(lambda c: {"sink": {"count": c}}, st.integers(1, max(1, n // 10))),
        st.builds(
            lambda t, d: {"global": {"tokens": t, "direction": d}},
            st.lists(st.integers(0, n - 1), min_size=1, max_size=3, unique=True),
            st.sampled_from(["both", "rows", "columns"]),
        ),
        st.builds(
            lambda e, o, d: {"global": {"every": e, "offset": e - 1 - o % e, "direction": d}},
            st.integers(8, 64),
            st.integers(0, 3),
            st.sampled_from(["both", "columns"]),
        ).filter(lambda g: g["global"]["offset"] < n),
        st.builds(lambda b: {"block_local": {"size": b}}, st.integers(1, max(1, n // 4))),
        st.just({"random": {"per_row": 1, "seed": 1}}),
    )
    pattern: Any = draw(st.lists(part, min_size=1, max_size=4))
    if draw(st.integers(0, 4)) == 0:
        pattern = {"difference": [pattern, draw(part)]}
    return {"name": "lowering", "seq_len": n, "block_size": block, "causal": draw(st.booleans()), "pattern": pattern}, n


#: A spec whose first rows attend no key, made of parts that lower to different orders.
EMPTY_ROWS_SPEC: dict[str, Any] = {
    "name": "empty rows",
    "pattern": {
        "intersect": [
            {
                "difference": [
                    [{"stride": {"every": 4}}, {"global": {"tokens": [5], "direction": "columns"}}],
                    {"window": {"before": 0, "after": 0}},
                ]
            },
            {"window": {"before": 5, "after": 0}},
        ]
    },
}


def _divisors(size: int) -> list[int]:
    return [d for d in range(1, size + 1) if size % d == 0]


@st.composite
def grids(draw: st.DrawFn, max_side: int = 9) -> dict[str, Any]:
    """A 2-D or 3-D grid field, row-major or tiled storage, with or without text tokens."""
    ndim = draw(st.sampled_from([2, 3]))
    side = max_side if ndim == 2 else max(2, max_side // 2 + 1)
    shape = [draw(st.integers(1, side)) for _ in range(ndim)]
    grid: dict[str, Any] = {"shape": shape}
    if draw(st.booleans()):
        grid["order"] = {"tiles": [draw(st.sampled_from(_divisors(s))) for s in shape]}
    if draw(st.booleans()):
        grid["text"] = draw(st.integers(1, 5))
    return grid


@st.composite
def grid_primitives(draw: st.DrawFn, shape: list[int]) -> dict[str, Any]:
    """A neighborhood (odd kernels, dilation, causal axes) or tiles primitive valid on `shape`."""
    text = draw(st.sampled_from([None, "all", "none"]))
    if draw(st.booleans()):
        dilation = [draw(st.integers(1, max(1, min(3, s)))) for s in shape]
        causal = [draw(st.booleans()) for _ in shape]
        kernel = []
        for s, d, c in zip(shape, dilation, causal):
            room = s // d
            kernel.append(draw(st.integers(1, room)) if c else draw(st.sampled_from(list(range(1, room + 1, 2)))))
        params: dict[str, Any] = {"kernel": kernel}
        if any(d > 1 for d in dilation) or draw(st.booleans()):
            params["dilation"] = dilation
        if any(causal):
            params["causal"] = causal
        kind = "neighborhood"
    else:
        tile = [draw(st.sampled_from(_divisors(s))) for s in shape]
        kernel = [t * draw(st.integers(1, s // t)) for s, t in zip(shape, tile)]
        params, kind = {"tile": tile, "kernel": kernel}, "tiles"
    if text is not None:
        params["text"] = text
    return {kind: params}


@st.composite
def grid_spec_dicts(draw: st.DrawFn, max_side: int = 9) -> tuple[dict, int]:
    """(spec, n) on a random small grid: one grid primitive, sometimes with a window or global beside it."""
    grid = draw(grids(max_side))
    n = int(np.prod(grid["shape"])) + grid.get("text", 0)
    pattern: Any = draw(grid_primitives(grid["shape"]))
    extra = draw(st.sampled_from([None, "window", "global", "intersect"]))
    if extra == "window":
        pattern = [pattern, {"window": {"size": draw(st.integers(0, 6))}}]
    elif extra == "global":
        pattern = [pattern, {"global": {"tokens": [draw(st.integers(0, n - 1))]}}]
    elif extra == "intersect":
        pattern = {"intersect": [pattern, {"window": {"before": draw(st.integers(0, n)), "after": 0}}]}
    spec = {"name": "grid", "grid": grid, "block_size": draw(st.sampled_from(POWERS_OF_TWO)), "pattern": pattern}
    if draw(st.integers(0, 4)) == 0:
        spec["causal"] = True
    return spec, n


def small_version(spec: Any, n: int) -> tuple[Any, int]:
    """(spec, n) for exact checks at a small size: a spec without a grid at n; a grid spec (whose n is
    its grid's) on a small canvas of the same structure. A NATTEN axis keeps its kernel on a canvas of
    kernel + 2; an STA axis keeps its kernel and canvas in tiles, with tiles a quarter as long."""
    if spec.grid is None:
        return spec, n
    data = spec.to_data()
    data.pop("seq_len", None)
    ((kind, params),) = data["pattern"].items()
    shape = data["grid"]["shape"]
    if kind == "neighborhood":
        data["grid"]["shape"] = [min(size, k + 2) for size, k in zip(shape, params["kernel"])]
    else:
        small = [max(1, t // 4) for t in params["tile"]]
        data["grid"]["shape"] = [size // t * u for size, t, u in zip(shape, params["tile"], small)]
        params["kernel"] = [k // t * u for k, t, u in zip(params["kernel"], params["tile"], small)]
        params["tile"] = small
        if "order" in data["grid"]:
            data["grid"]["order"] = {"tiles": small}
    small_spec = type(spec).model_validate(data)
    return small_spec, small_spec.seq_len


@st.composite
def document_spec_dicts(draw: st.DrawFn, max_n: int = 160) -> tuple[dict, int, list[int]]:
    """(spec, n, document lengths): document, per-document sink and global, composed with static parts."""
    lengths = draw(st.lists(st.integers(1, 60), min_size=1, max_size=6))
    n = min(sum(lengths), max_n)
    lengths = _trimmed(lengths, n)
    block = draw(st.sampled_from(POWERS_OF_TWO))
    per_doc = st.one_of(
        st.just({"document": {}}),
        st.builds(lambda c: {"sink": {"count": c, "per": "document"}}, st.integers(1, 8)),
        st.builds(
            lambda f, d: {"global": {"first": f, "per": "document", "direction": d}},
            st.integers(1, 6),
            st.sampled_from(["both", "rows", "columns"]),
        ),
        st.builds(
            lambda e, o: {"global": {"every": e, "offset": min(o % e, n - 1), "per": "document"}},
            st.integers(1, 9),
            st.integers(0, 8),
        ),
    )
    leaf = draw(per_doc)
    other = draw(primitives(n, block))
    shape = draw(st.sampled_from(["alone", "intersect", "union", "difference", "swapped"]))
    pattern: Any = {
        "alone": leaf,
        "intersect": {"intersect": [{"document": {}}, other]},
        "union": [{"intersect": [{"document": {}}, other]}, leaf],
        "difference": {"difference": [leaf, other]},
        "swapped": {"difference": [other, leaf]},
    }[shape]
    spec = {"name": "documents", "seq_len": n, "block_size": block, "causal": draw(st.booleans()), "pattern": pattern}
    return spec, n, lengths


def _trimmed(lengths: list[int], n: int) -> list[int]:
    """The lengths cut so that they sum to n."""
    out, total = [], 0
    for length in lengths:
        take = min(length, n - total)
        if take > 0:
            out.append(take)
            total += take
    return out
