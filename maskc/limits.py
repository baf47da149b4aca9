"""Every size limit maskc enforces, in one place, with the reason for each.

Inputs past these limits are refused up front with a message that names the limit
(`maskc.limits.NAME`), so that no spec, flag or file can make maskc hang or exhaust memory.
Where an algorithm can make a large input cheap it does so instead of refusing; the limits
below guard work that is inherently large.
"""

from __future__ import annotations

import math

from maskc.errors import TooLargeError

#: Largest sequence length: every position and tile index stays in int32.
MAX_SEQ_LEN = 2**31 - 1
#: Largest integer parameter of a primitive (window before/after/size/dilation, stride every,
#: global every/offset/tokens, axial width, …): past MAX_SEQ_LEN a parameter means no more, and
#: below 2**62 every sum of a parameter and a position stays inside int64.
MAX_PARAMETER = 2**62
#: Most stored tiles one layout may hold; the IR's tables then stay within a few GiB, and the
#: analyses that walk every stored tile end within a minute. Checked on the rule's estimate
#: before any table is built; a larger tile (`--block-size`) stores fewer tiles. Dense causal
#: attention at n = 262144 in the backward kernels' 32 x 64 tiles stores 2**24 + 2**12 tiles, so
#: the limit sits well above that.
MAX_STORED_TILES = 1 << 26
#: Most tile rows (or columns) of a grid, n / tile side: row pointers, per-row work in every
#: analysis (empty rows, reach) and the estimate of stored tiles are per tile row; at this limit a
#: 64-wide tile reaches n = 2**27, a 1024-wide one every n up to MAX_SEQ_LEN.
MAX_TILE_ROWS = 1 << 21
#: Longest sequence whose reach is proved (`maskc verify`, explain's min_layers): the engines hold
#: several int64 tables of n and walk every token, about 1 GB and half a minute of CPU at this n.
MAX_REACH_SEQ_LEN = 1 << 22
#: Longest sequence whose schedule `maskc compile` plans for its summary: a schedule holds each
#: pass's position tables (8 bytes a position), so past this the summary leaves the passes out.
MAX_SCHEDULE_SEQ_LEN = 1 << 27
#: Largest tile side (and spec block_size): element masks are evaluated a tile at a time, and
#: Triton kernels take tiles of at most a few hundred rows.
MAX_TILE_SIDE = 1024
#: Most attention heads a pattern is compiled for: the head → layout table goes to every kernel.
MAX_HEADS = 1 << 16
#: Most layers in one cycle of a `layers:` schedule (the sum of its counts); explain and the
#: reach pictures walk the schedule layer by layer.
MAX_SCHEDULE_LAYERS = 1 << 16
#: Most layers `maskc show --reach` draws: each layer multiplies two dense n × n matrices.
MAX_REACH_LAYERS = 1024
#: Deepest nesting of combinators in a pattern (union inside intersect inside …); the YAML
#: composer and serializers recurse per level.
MAX_NESTING_DEPTH = 32
#: Most pattern nodes (primitives and combinators) in one spec; each becomes a rule that every
#: stored tile is classified against.
MAX_PATTERN_NODES = 1000
#: Most entries in a global `tokens` list (a 1 MiB spec file holds about 150,000 anyway).
MAX_GLOBAL_TOKENS = 1 << 20
#: Most k-means iterations of a cluster primitive; each is a pass over q and k at run time.
MAX_CLUSTER_ITERATIONS = 1000
#: Most clusters of a cluster primitive: run time holds scores (and, for lsh, a rotation) per cluster.
MAX_CLUSTERS = 1 << 16
#: Most entries of a random primitive's table (rows × per_row, int64): it is drawn at lowering and
#: read by every kernel.
MAX_RANDOM_ENTRIES = 1 << 26
#: Most comparisons of a random draw (rows × per_row² / 2: each of per_row steps checks every row's
#: earlier picks), a few seconds of CPU.
MAX_RANDOM_WORK = 1 << 31
#: Largest spec file, refused before parsing.
MAX_SPEC_BYTES = 1 << 20
#: Most YAML nodes a spec may expand to once aliases are followed (stops "billion laughs").
MAX_SPEC_NODES = 100_000
#: Largest IR file (`compile --out`) read back, compressed; its tables are checked after loading.
MAX_IR_FILE_BYTES = 1 << 30
#: Most ranks a context-parallel plan is made for (`maskc plan --ranks`): a plan lists the keys
#: every rank sends every other, and a pattern that reads every key (dense causal) has P² of them;
#: 4096 ranks plan in about a minute for a window spec, past what one host's processes reach.
MAX_PLAN_RANKS = 4096


#: Bits of a whole number that a message spells out (about 40 digits); longer ones are described
#: by their length.
_SHOWN_BITS = 133


def shown(value: object) -> str:
    """`value` for a message: repr, except that a whole number too long to read (Python refuses
    to print one past 4300 digits) is given as its digit count."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _SHOWN_BITS:
        digits = int(value.bit_length() * math.log10(2)) + 1  # no decimal conversion, which is what fails
        return f"{'a negative' if value < 0 else 'a'} number of about {digits} digits"
    if isinstance(value, tuple | list):
        inner = ", ".join(map(shown, value)) + ("," if isinstance(value, tuple) and len(value) == 1 else "")
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    return repr(value)


def exceeds(what: str, value: int, name: str) -> str:
    """The message for a value over a limit: '<what> N exceeds the limit of M (maskc.limits.NAME)'."""
    return f"{what} {shown(value)} exceeds the limit of {globals()[name]} (maskc.limits.{name})"


def check_grid(n: int, block_m: int, block_n: int, stored: int | None = None) -> None:
    """Refuse a tile grid over MAX_TILE_ROWS, or `stored` (an upper bound on stored tiles) over
    MAX_STORED_TILES, before any work per tile row or per tile."""
    where = f"at n = {n} with {block_m} x {block_n} tiles"
    sides = max(-(-n // block_m), -(-n // block_n))
    if sides > MAX_TILE_ROWS:
        raise TooLargeError(
            f"{where} the grid has {sides:,} tile rows, over the limit of {MAX_TILE_ROWS:,} "
            "(maskc.limits.MAX_TILE_ROWS); use larger tiles (--block-size)"
        )
    if stored is not None and stored > MAX_STORED_TILES:
        raise TooLargeError(
            f"{where} the pattern stores up to {stored:,} tiles, over the limit of {MAX_STORED_TILES:,} "
            "(maskc.limits.MAX_STORED_TILES); use larger tiles (--block-size) or a shorter sequence"
        )
