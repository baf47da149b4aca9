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
    kind: str, p: dict[str, Any], n: int, block: int, i: np.ndarray, j: np.ndarray, docs: np.ndarray | None = None
) -> np.ndarray:
    if kind == "document":
        return docs[i] == docs[j]
    if p.get("per") == "document":
        return _per_document(kind, p, n, docs, i, j)
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


def pattern_mask(node: Any, n: int, block: int, docs: np.ndarray | None = None) -> np.ndarray:
    """Dense (n, n) mask of one pattern node in spec-file form (`docs`: document id per position)."""
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    if isinstance(node, list):
        node = {"union": node}
    ((kind, params),) = node.items()
    if kind in ("union", "intersect", "difference"):
        parts = [pattern_mask(child, n, block, docs) for child in params]
        if kind == "union":
            return np.logical_or.reduce(parts)
        if kind == "intersect":
            return np.logical_and.reduce(parts)
        return parts[0] & ~parts[1]
    return np.broadcast_to(_primitive(kind, params or {}, n, block, i, j, docs), (n, n)).copy()


def brute_force_mask(spec: dict[str, Any], n: int, docs: np.ndarray | None = None) -> np.ndarray:
    """(n, n) mask, or (heads, n, n) when the spec has head_patterns; `docs` for document primitives."""
    block = spec.get("block_size", 64)
    causal = np.tril(np.ones((n, n), dtype=bool)) if spec.get("causal", False) else np.ones((n, n), dtype=bool)
    if not spec.get("head_patterns"):
        return pattern_mask(spec["pattern"], n, block, docs) & causal
    per_head = []
    for h in range(spec["heads"]):
        node = next((e["pattern"] for e in spec["head_patterns"] if h in e["heads"]), spec["pattern"])
        per_head.append(pattern_mask(node, n, block, docs) & causal)
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
