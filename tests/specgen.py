"""Random specs for property tests, and an independent dense evaluator of the spec language.

`brute_force_mask` evaluates a spec dict element by element from the definitions in the
spec reference (README), sharing no code with the compiler except the seeded random draw,
which is part of the definition of the `random` primitive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from maskc.rules import draw_distinct

POWERS_OF_TWO = [1, 2, 4, 8, 16, 32, 64]
TILE_SIDES = [16, 32, 64, 128]


# ----------------------------------------------------------------------------- evaluator


def _token_set(params: dict[str, Any], n: int) -> np.ndarray:
    member = np.zeros(n, dtype=bool)
    if "tokens" in params:
        member[params["tokens"]] = True
    elif "first" in params:
        member[: params["first"]] = True
    else:
        member[np.arange(n) % params["every"] == params.get("offset", 0)] = True
    return member


def _random_mask(params: dict[str, Any], n: int, block: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    unit = block if params.get("granularity", "block") == "block" else 1
    units = -(-n // unit)
    rng = np.random.default_rng([params.get("seed", 0), n, block])
    table = draw_distinct(units, units, params["per_row"], rng)
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


def _primitive(
    kind: str, p: dict[str, Any], n: int, block: int, i: np.ndarray, j: np.ndarray, grid: dict[str, Any] | None = None
) -> np.ndarray:
    if kind in ("neighborhood", "tiles"):
        assert grid is not None
        return _grid_primitive(kind, p, grid, i, j)
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


def pattern_mask(node: Any, n: int, block: int, grid: dict[str, Any] | None = None) -> np.ndarray:
    """Dense (n, n) mask of one pattern node in spec-file form."""
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    if isinstance(node, list):
        node = {"union": node}
    ((kind, params),) = node.items()
    if kind in ("union", "intersect", "difference"):
        parts = [pattern_mask(child, n, block, grid) for child in params]
        if kind == "union":
            return np.logical_or.reduce(parts)
        if kind == "intersect":
            return np.logical_and.reduce(parts)
        return parts[0] & ~parts[1]
    return np.broadcast_to(_primitive(kind, params or {}, n, block, i, j, grid), (n, n)).copy()


def brute_force_mask(spec: dict[str, Any], n: int) -> np.ndarray:
    """(n, n) mask, or (heads, n, n) when the spec has head_patterns."""
    block = spec.get("block_size", 64)
    causal = np.tril(np.ones((n, n), dtype=bool)) if spec.get("causal", False) else np.ones((n, n), dtype=bool)
    grid = spec.get("grid")
    if not spec.get("head_patterns"):
        return pattern_mask(spec["pattern"], n, block, grid) & causal
    per_head = []
    for h in range(spec["heads"]):
        node = next((e["pattern"] for e in spec["head_patterns"] if h in e["heads"]), spec["pattern"])
        per_head.append(pattern_mask(node, n, block, grid) & causal)
    return np.stack(per_head)


# ----------------------------------------------------------------------------- strategies


@st.composite
def primitives(draw: st.DrawFn, n: int, block: int) -> dict[str, Any]:
    """One static primitive whose parameters are valid at sequence length n."""
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
    return kids if kind == "list" else {kind: kids}


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
        spec["layers"] = [
            {"count": draw(st.integers(1, 3))}
            if draw(st.booleans())
            else {"count": draw(st.integers(1, 3)), "pattern": draw(patterns(n, block, depth=1))}
            for _ in range(draw(st.integers(1, 3)))
        ]
    return spec, n


def tile_shapes() -> st.SearchStrategy[tuple[int, int]]:
    """IR tile shapes, square and rectangular."""
    return st.tuples(st.sampled_from(TILE_SIDES), st.sampled_from(TILE_SIDES))


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
