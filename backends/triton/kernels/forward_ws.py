"""Forward pass on Hopper, warp-specialised: one loading warp group, two computing warp groups.

The same computation as `forward.maskc_forward` (block-sparse flash attention over the IR's
block-CSR, full tiles without the predicate, partial tiles through `tile_mask`), written in Gluon,
Triton's lower-level language, for what Triton's own compiler does not do on Hopper (its warp
specialisation left our loop as it was; bench/NOTES.md):

- **Persistent programs.** One program per SM takes work items (query tiles, "rows", of every
  (batch, head), in `program_slot`'s order) from a counter shared by the launch, row after row: the
  loads of a row's first tiles run while the row before it finishes, so a short row (a band 513 keys
  wide, a document's last tiles) pays no pipeline fill, and a program that drew short rows takes more
  of them (long rows and uneven documents balance).
- **A loading partition** (`issue_loads`) takes the items and issues every load as a bulk tensor copy
  (TMA) into rings of shared buffers: a 128-row query tile per row (two buffers, each with its item
  and the row's walk beside it, which the computing partitions read there instead of looking it up
  again) and each key and value tile (`STAGES` buffers each), signalling `*_ready` barriers; it
  waits on `*_empty` barriers for a buffer to come free.
- **Two computing partitions** (`attend_rows`, one warp group each) take the 64-row halves of each
  query tile and the same key and value tiles: scores by a warp-group product from shared memory,
  online softmax in base 2 in registers, the probabilities as the register operand of the second
  product. Both release a key/value buffer (its `kv_empty` counts two arrivals). With OVERLAP a
  half computes a tile's scores while the tile before it multiplies the values, and that tile's
  softmax while the product runs (FlashAttention-3's order, `attend_walk`); without, in turn
  (`attend_tiles`). The tuner times both.
- **Half kinds** (HALF_KINDS, without overlap): each partial tile comes with its two halves' kinds
  (`tables.half_kinds`). A computing partition whose half of the tile holds no active pair skips
  both products (it still waits for the tile, so that it never runs more than the ring ahead of the
  other), and one whose half is full runs it without the predicate. BigBird's partial 128 × 64
  tiles are all one full half and one empty one.

Calls it serves (`forward.ws_eligible`): whole-tile, full-length calls in token order with tensor
descriptors, 16-bit inputs, 128-row tiles, head dims 64 or 128, a pass that starts the rows (not one
going on from earlier passes'). With SPLIT (tables.py), a long row (a global token's) runs as chunks,
the first work items: each walks its part of the row and keeps its float32 partial (`keep_rows`,
`keep_terms`), which the Triton forward's merge combines after the launch (`forward.merge_long_rows`).
Gluon kernels do not run under Triton's interpreter: the GPU suite checks this one against the
reference (tests/gpu/test_forward_ws_gpu.py), and on other devices the tuner never offers it.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .common import LN2, head_tables, item_slot, walk_parts

#: Rows of a computing warp group (a warp-group product's M), and computing warp groups per query tile.
GROUP_ROWS = gl.constexpr(64)
CONSUMERS = gl.constexpr(2)
#: A one-element tensor over one warp group (a work item read from or written to shared memory).
ONE = gl.constexpr(gl.BlockedLayout([1], [32], [4], [0]))
#: A published work item's fields in its shared slot (`publish_item`): the item, then, for a row, its
#: walk as the loading partition looked it up (batch·heads + head, layout code, query tile, full [lo,
#: hi), partial [lo, hi); a long row's chunk its part of the row).
ITEM_FIELDS = gl.constexpr(8)


@gluon.jit
def row_walk(it, row_order, head_layout, table_of_head, table_stride, layouts, full_ptr, partial_ptr,
             heads, group, batch_heads, row_tiles, long_rows, chunks, SPLIT: gl.constexpr):
    """(batch, head, kv head, batch·heads + head, layout code, query tile, full [lo, hi), partial [lo, hi))
    of work item `it`: the row program `it` of the unpersisted kernel (with SPLIT a long row's chunk
    walks its part of the row, `item_slot`)."""
    slot, bh, first, last = item_slot(it, chunks, long_rows, row_tiles, batch_heads, SPLIT)
    b, h, kvh, code, table = head_tables(bh, head_layout, table_of_head, table_stride, layouts, heads, group)
    row = gl.load(row_order + slot)
    at = table * (row_tiles + 1) + row
    full_lo, full_hi, partial_lo, partial_hi = walk_parts(
        gl.load(full_ptr + at), gl.load(full_ptr + at + 1), gl.load(partial_ptr + at), gl.load(partial_ptr + at + 1),
        first, last, SPLIT)
    return b, h, kvh, bh, code, row, full_lo, full_hi, partial_lo, partial_hi


@gluon.jit
def half_of_row(rows_done, row_ids, heads, BLOCK_M: gl.constexpr, HALF: gl.constexpr):
    """(batch, head, batch·heads + head, layout code, first position, query buffer slot, full [lo, hi),
    partial [lo, hi)) of computing partition HALF's half of the program's rows_done-th row. The walk
    is read where the loading partition published it (its table lookups are a chain of dependent
    global loads, which would otherwise stall both computing partitions at every row's start, a cost
    short rows feel most)."""
    qb = rows_done % 2
    slot = row_ids.index(qb)
    bh, code, row, full_lo, full_hi, partial_lo, partial_hi = (
        item_field(slot, 1), item_field(slot, 2), item_field(slot, 3), item_field(slot, 4), item_field(slot, 5),
        item_field(slot, 6), item_field(slot, 7))
    return bh // heads, bh % heads, bh, code, row * BLOCK_M + HALF * GROUP_ROWS, qb, full_lo, full_hi, partial_lo, \
        partial_hi


@gluon.constexpr_function
def product_layout(columns):
    """The register layout of a 64-row warp-group product's result with `columns` columns (16-bit
    operands: instructions of 16 × columns × 16)."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, columns, 16])


@gluon.jit
def ring_slot(count, SIZE: gl.constexpr):
    """(buffer, phase) of the count-th use of a ring of SIZE buffers."""
    return count % SIZE, (count // SIZE) & 1


@gluon.jit
def issue_loads(args, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
                WITH_DO: gl.constexpr, SPLIT: gl.constexpr):
    # The loading partition: for each row, its work item (published beside its query tile), its query
    # tile (and with WITH_DO, for dQ, its dO tile, signalled by the same barrier), then its key and
    # value tiles (full, then partial), each into the next free buffer of its ring; after the last
    # row, an item past the end, which stops the computing partitions. With SPLIT the first items
    # are the long rows' chunks, each a part of its row (`row_walk`).
    (q_desc, k_desc, v_desc, q_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids, counter,
     stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh, row_order, head_layout, table_of_head,
     table_stride, layouts, full_ptr, full_idx, partial_ptr, partial_idx, heads, group, batch_heads, row_tiles,
     long_rows, items, do_desc, do_bufs, stride_db, stride_dh, chunks) = args
    kv_count = 0
    rows_done = 0
    it = next_item(counter)
    while it < items:
        b, h, kvh, bh, code, row, full_lo, full_hi, partial_lo, partial_hi = row_walk(
            it, row_order, head_layout, table_of_head, table_stride, layouts, full_ptr, partial_ptr,
            heads, group, batch_heads, row_tiles, long_rows, chunks, SPLIT)
        qb = publish_item(row_ids, q_empty, it, rows_done, (bh, code, row, full_lo, full_hi, partial_lo, partial_hi),
                          True)
        q_row, do_row = descriptor_rows(b, h, stride_qb, stride_qh, stride_db, stride_dh, row * BLOCK_M, HEAD_DIM)
        if WITH_DO:
            mbarrier.expect(q_ready.index(qb), q_desc.block_type.nbytes + do_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(do_desc, [do_row, 0], q_ready.index(qb), do_bufs.index(qb))
        else:
            mbarrier.expect(q_ready.index(qb), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [q_row, 0], q_ready.index(qb), q_bufs.index(qb))
        k_row, v_row = descriptor_rows(b, kvh, stride_kb, stride_kh, stride_vb, stride_vh, 0, HEAD_DIM)
        kv_count = load_walk(k_desc, v_desc, k_bufs, v_bufs, k_ready, v_ready, kv_empty, k_row, v_row,
                             (full_idx, full_lo, full_hi, partial_idx, partial_lo, partial_hi), kv_count,
                             BLOCK_N, STAGES)
        rows_done += 1
        it = next_item(counter)
    mbarrier.arrive(q_ready.index(publish_item(row_ids, q_empty, items, rows_done)), count=1)


@gluon.jit
def descriptor_rows(b, h, stride_ab, stride_ah, stride_bb, stride_bh, first, HEAD_DIM: gl.constexpr):
    """The rows of position `first` of (batch b, head h) in two tensors' descriptors (descriptors.py)."""
    a_row = (b * (stride_ab // HEAD_DIM) + h * (stride_ah // HEAD_DIM) + first).to(gl.int32)
    b_row = (b * (stride_bb // HEAD_DIM) + h * (stride_bh // HEAD_DIM) + first).to(gl.int32)
    return a_row, b_row


@gluon.jit
def buffer_pair(ADesc, BDesc, SLOTS: gl.constexpr, ROWS: gl.constexpr, HEAD_DIM: gl.constexpr):
    """Two rings of SLOTS shared buffers for ADesc's and BDesc's [ROWS, HEAD_DIM] tiles."""
    return (gl.allocate_shared_memory(ADesc.dtype, [SLOTS, ROWS, HEAD_DIM], ADesc.layout),
            gl.allocate_shared_memory(BDesc.dtype, [SLOTS, ROWS, HEAD_DIM], BDesc.layout))


@gluon.jit
def next_item(counter):
    """The next work item no program has taken (one counter per launch): a program that drew short
    rows takes more of them, so long rows (a global token's) and uneven ones (documents) balance."""
    return gl.atomic_add(counter, 1, sem="relaxed")


@gluon.jit
def publish_item(row_ids, q_empty, it, rows_done, walk=None, WALK: gl.constexpr = False):
    """Write work item `it` (and with WALK its row's `walk`: batch·heads + head, code, query tile, full
    [lo, hi), partial [lo, hi)) into the slot of the program's rows_done-th query tile once that slot is free; the slot
    (the arrival on its q_ready barrier that follows releases the writes)."""
    qb, q_phase = ring_slot(rows_done, 2)
    mbarrier.wait(q_empty.index(qb), q_phase ^ 1)
    slot = row_ids.index(qb)
    set_item_field(slot, 0, it)
    if WALK:
        for i in gl.static_range(7):
            set_item_field(slot, i + 1, walk[i])
    gl.thread_barrier()
    return qb


@gluon.jit
def set_item_field(slot, i: gl.constexpr, value):
    """Write field i of a work item's slot (`ITEM_FIELDS`)."""
    slot.slice(i, 1).store(gl.full([1], value, gl.int32, layout=ONE))


@gluon.jit
def item_field(slot, i: gl.constexpr):
    """Field i of a published work item's slot (`ITEM_FIELDS`)."""
    return gl.max(slot.slice(i, 1).load(ONE), 0)


@gluon.jit
def take_item(row_ids, q_ready, rows_done):
    """The work item of the program's rows_done-th query tile, once published (items: none left)."""
    qb, q_phase = ring_slot(rows_done, 2)
    mbarrier.wait(q_ready.index(qb), q_phase)
    return item_field(row_ids.index(qb), 0)


@gluon.jit
def load_walk(ADesc, BDesc, a_bufs, b_bufs, a_ready, b_ready, empty, a_row, b_row, walk, count,
              BLOCK: gl.constexpr, STAGES: gl.constexpr, terms=None, TERMS: gl.constexpr = False):
    # A line's tile pairs into the ring, its full tiles, then its partial ones (walk: (full_idx,
    # full_lo, full_hi, partial_idx, partial_lo, partial_hi)); the ring's count after them. TERMS:
    # each tile's row terms too (`load_tiles`).
    full_idx, full_lo, full_hi, partial_idx, partial_lo, partial_hi = walk
    count = load_tiles(ADesc, BDesc, a_bufs, b_bufs, a_ready, b_ready, empty, a_row, b_row, full_idx, full_lo, full_hi,
                       count, BLOCK, STAGES, terms, TERMS)
    return load_tiles(ADesc, BDesc, a_bufs, b_bufs, a_ready, b_ready, empty, a_row, b_row, partial_idx, partial_lo,
                      partial_hi, count, BLOCK, STAGES, terms, TERMS)


@gluon.jit
def load_tiles(KDesc, VDesc, k_bufs, v_bufs, k_ready, v_ready, kv_empty, k_row, v_row,
               tile_idx, lo, hi, kv_count, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, terms=None,
               TERMS: gl.constexpr = False):
    # Key and value tiles tile_idx[lo:hi] into the ring (each signals its own barrier, so the scores
    # can start before the values have landed). TERMS (dK/dV, whose tiles are query and dO tiles):
    # beside each, its rows' float32 term (lse, delta) on the same barrier; terms = (first row's
    # index in the terms' vectors, the lse descriptor and buffers, the delta descriptor and buffers).
    for t in range(lo, hi):
        s, phase = ring_slot(kv_count, STAGES)
        start_n = (gl.load(tile_idx + t) * BLOCK_N).to(gl.int32)
        mbarrier.wait(kv_empty.index(s), phase ^ 1)
        if TERMS:
            first, k_terms, k_term_bufs, v_terms, v_term_bufs = terms
            mbarrier.expect(k_ready.index(s), KDesc.block_type.nbytes + k_terms.block_type.nbytes)
            tma.async_copy_global_to_shared(k_terms, [first + start_n], k_ready.index(s), k_term_bufs.index(s))
        else:
            mbarrier.expect(k_ready.index(s), KDesc.block_type.nbytes)
        tma.async_copy_global_to_shared(KDesc, [k_row + start_n, 0], k_ready.index(s), k_bufs.index(s))
        if TERMS:
            mbarrier.expect(v_ready.index(s), VDesc.block_type.nbytes + v_terms.block_type.nbytes)
            tma.async_copy_global_to_shared(v_terms, [first + start_n], v_ready.index(s), v_term_bufs.index(s))
        else:
            mbarrier.expect(v_ready.index(s), VDesc.block_type.nbytes)
        tma.async_copy_global_to_shared(VDesc, [v_row + start_n, 0], v_ready.index(s), v_bufs.index(s))
        kv_count += 1
    return kv_count


@gluon.jit
def attend_rows(args, tile_mask: gl.constexpr, mask_args, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, OVERLAP: gl.constexpr, HALF: gl.constexpr,
                HALF_KINDS: gl.constexpr, SPLIT: gl.constexpr):
    # A computing partition: rows [HALF · 64, HALF · 64 + 64) of every query tile the program walks.
    (q_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids, out_desc, o_bufs, lse_ptr,
     stride_ob, stride_oh, full_idx, partial_idx, partial_halves, qk_scale, n_ctx, heads, items, chunk_items,
     acc_work, m_work, l_work) = args
    s_layout: gl.constexpr = product_layout(BLOCK_N)
    o_layout: gl.constexpr = product_layout(HEAD_DIM)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    dtype: gl.constexpr = q_bufs.dtype
    kv_count = 0
    rows_done = 0
    it = take_item(row_ids, q_ready, rows_done)
    while it < items:
        b, h, bh, code, start_m, qb, full_lo, full_hi, partial_lo, partial_hi = half_of_row(
            rows_done, row_ids, heads, BLOCK_M, HALF)
        q = q_bufs.index(qb).slice(HALF * GROUP_ROWS, GROUP_ROWS, dim=0)
        m_i = gl.full([GROUP_ROWS], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
        l_i = gl.zeros([GROUP_ROWS], gl.float32, layout=gl.SliceLayout(1, s_layout))
        acc = gl.zeros([GROUP_ROWS, HEAD_DIM], gl.float32, layout=o_layout)
        if OVERLAP:
            # Stages 1 and 2 as one walk, each tile's scores computed while the tile before it is
            # folded in (full tiles first, then partial ones through the predicate)
            acc, m_i, l_i, kv_count = attend_walk(
                q, k_bufs, v_bufs, k_ready, v_ready, kv_empty, acc, m_i, l_i, kv_count,
                full_idx, full_lo, full_hi - full_lo, partial_idx, partial_lo, partial_hi - partial_lo,
                start_m, code, n_ctx, qk_scale, tile_mask, mask_args, s_layout, o_layout, p_layout, dtype,
                BLOCK_N, STAGES)
        else:
            # Stage 1: the row's full tiles, no predicate; Stage 2: its partial tiles, through the predicate.
            acc, m_i, l_i, kv_count = attend_tiles(
                q, k_bufs, v_bufs, k_ready, v_ready, kv_empty, acc, m_i, l_i, kv_count, full_idx, full_lo,
                full_hi, start_m, code, n_ctx, qk_scale, tile_mask, mask_args, s_layout, o_layout, p_layout, dtype,
                BLOCK_N, STAGES, False)
            acc, m_i, l_i, kv_count = attend_tiles(
                q, k_bufs, v_bufs, k_ready, v_ready, kv_empty, acc, m_i, l_i, kv_count, partial_idx, partial_lo,
                partial_hi, start_m, code, n_ctx, qk_scale, tile_mask, mask_args, s_layout, o_layout, p_layout,
                dtype, BLOCK_N, STAGES, True, partial_halves, HALF_KINDS, HALF)
        # the query tile's buffer is free once both halves are past their last product
        mbarrier.arrive(q_empty.index(qb), count=1)
        # Stage 3: normalise and store (a row with no key: zeros and lse = −inf), or, for a long row's
        # chunk, keep the partial (acc, m, l in base 2) for the merge (kernels/forward.py's).
        if SPLIT:
            if it < chunk_items:
                keep_rows(acc_work, it, acc, o_layout, BLOCK_M, HALF, HEAD_DIM)
                keep_terms(m_work, it, m_i, gl.SliceLayout(1, s_layout), BLOCK_M, HALF)
                keep_terms(l_work, it, l_i, gl.SliceLayout(1, s_layout), BLOCK_M, HALF)
            else:
                finish_half(out_desc, o_bufs.index(HALF), lse_ptr, acc, m_i, l_i, b, h, bh, start_m, n_ctx,
                            stride_ob, stride_oh, o_layout, HEAD_DIM)
        else:
            finish_half(out_desc, o_bufs.index(HALF), lse_ptr, acc, m_i, l_i, b, h, bh, start_m, n_ctx, stride_ob,
                        stride_oh, o_layout, HEAD_DIM)
        rows_done += 1
        it = take_item(row_ids, q_ready, rows_done)
    tma.store_wait(0)  # the last row's output has left shared memory


@gluon.jit
def attend_tiles(q, k_bufs, v_bufs, k_ready, v_ready, kv_empty, acc, m_i, l_i, kv_count, tile_idx, lo, hi,
                 start_m, code, n_ctx, qk_scale, tile_mask: gl.constexpr, mask_args,
                 s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr, dtype: gl.constexpr,
                 BLOCK_N: gl.constexpr, STAGES: gl.constexpr, MASKED: gl.constexpr, halves=None,
                 HALF_KINDS: gl.constexpr = False, HALF: gl.constexpr = 0):
    # Fold the key tiles tile_idx[lo:hi] into the running softmax of one 64-row half. HALF_KINDS (partial
    # tiles): the half's own kind of each tile (halves[t], 2 bits a half) skips an empty half's products
    # and runs a full half's without the predicate.
    offs_q = start_m + gl.arange(0, GROUP_ROWS, layout=gl.SliceLayout(1, s_layout))
    for t in range(lo, hi):
        s, phase = ring_slot(kv_count, STAGES)
        mbarrier.wait(k_ready.index(s), phase)
        start_n = gl.load(tile_idx + t) * BLOCK_N
        if HALF_KINDS:
            kind = (gl.load(halves + t).to(gl.int32) >> (2 * HALF)) & 3
            if kind != 0:
                acc, m_i, l_i = attend_tile(q, k_bufs.index(s), v_bufs.index(s), v_ready.index(s), phase, acc, m_i,
                                            l_i, kind == 1, offs_q, start_n, code, n_ctx, qk_scale, tile_mask,
                                            mask_args, start_m, s_layout, o_layout, p_layout, dtype, BLOCK_N)
            else:
                # an empty half waits for the whole tile as the other half does (so that neither runs
                # more than the ring ahead of the other, and no copy is in flight when the buffer is
                # refilled), then only releases it
                mbarrier.wait(v_ready.index(s), phase)
        else:
            acc, m_i, l_i = attend_tile(q, k_bufs.index(s), v_bufs.index(s), v_ready.index(s), phase, acc, m_i, l_i,
                                        MASKED, offs_q, start_n, code, n_ctx, qk_scale, tile_mask, mask_args,
                                        start_m, s_layout, o_layout, p_layout, dtype, BLOCK_N)
        mbarrier.arrive(kv_empty.index(s), count=1)
        kv_count += 1
    return acc, m_i, l_i, kv_count


@gluon.jit
def attend_tile(q, k_buf, v_buf, v_bar, phase, acc, m_i, l_i, masked, offs_q, start_n, code, n_ctx, qk_scale,
                tile_mask: gl.constexpr, mask_args, start_m, s_layout: gl.constexpr, o_layout: gl.constexpr,
                p_layout: gl.constexpr, dtype: gl.constexpr, BLOCK_N: gl.constexpr):
    """One key tile (landed) and its value tile (waited for on `v_bar` after the scores, so that they
    can start before the values land) folded into a half's running softmax, through the predicate
    where `masked` (a compile-time or a run-time flag)."""
    # -- scores: Q (shared) · Kᵀ (shared, transposed view) --
    qk = gl.zeros([GROUP_ROWS, BLOCK_N], gl.float32, layout=s_layout)
    qk = warpgroup_mma(q, k_buf.permute((1, 0)), qk, use_acc=False, is_async=True)
    qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))
    p, alpha, m_i, l_i = probabilities(qk, m_i, l_i, masked, offs_q, start_n, code, n_ctx, qk_scale, tile_mask,
                                       mask_args, start_m, s_layout, BLOCK_N)
    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
    # -- values: P (registers) · V (shared) --
    mbarrier.wait(v_bar, phase)
    acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v_buf, acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    return acc, m_i, l_i


@gluon.jit
def walk_start(i, full_idx, full_lo, full_count, partial_idx, partial_lo, BLOCK_N: gl.constexpr):
    """First key position of position i of a row's walk: its full tiles, then its partial ones."""
    full = gl.load(full_idx + full_lo + i, mask=i < full_count, other=0)
    partial = gl.load(partial_idx + partial_lo + (i - full_count), mask=i >= full_count, other=0)
    return gl.where(i < full_count, full, partial) * BLOCK_N


@gluon.jit
def probabilities(qk, m_i, l_i, masked, offs_q, start_n, code, n_ctx, qk_scale, tile_mask: gl.constexpr, mask_args,
                  start_m, s_layout: gl.constexpr, BLOCK_N: gl.constexpr):
    """(p, alpha, m, l) of one tile's scores in the online softmax (base 2), through the predicate when
    `masked`; m_use keeps a row with no key so far at exp2(−inf) = 0."""
    if masked:
        offs_k = start_n + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        keep = tile_mask(offs_q[:, None], offs_k[None, :], code, n_ctx, mask_args, start_m, start_n, True)
        qk = gl.where(keep, qk, float("-inf"))
    m_ij = gl.maximum(m_i, gl.max(qk, 1) * qk_scale)
    m_use = gl.where(m_ij == float("-inf"), 0.0, m_ij)
    p = gl.exp2(qk * qk_scale - m_use[:, None])
    alpha = gl.exp2(m_i - m_use)
    return p, alpha, m_ij, l_i * alpha + gl.sum(p, 1)


@gluon.jit
def attend_walk(q, k_bufs, v_bufs, k_ready, v_ready, kv_empty, acc, m_i, l_i, kv_count,
                full_idx, full_lo, full_count, partial_idx, partial_lo, partial_count,
                start_m, code, n_ctx, qk_scale, tile_mask: gl.constexpr, mask_args,
                s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr, dtype: gl.constexpr,
                BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
    # One 64-row half's walk with the products overlapped (FlashAttention-3's order): the scores of
    # tile i are computed while tile i − 1's probabilities multiply its values, and tile i's softmax
    # runs while that product finishes; acc is rescaled once it has.
    offs_q = start_m + gl.arange(0, GROUP_ROWS, layout=gl.SliceLayout(1, s_layout))
    total = full_count + partial_count
    if total > 0:
        # -- prologue: the first tile's scores and probabilities --
        s, phase = ring_slot(kv_count, STAGES)
        start_n = walk_start(0, full_idx, full_lo, full_count, partial_idx, partial_lo, BLOCK_N)
        mbarrier.wait(k_ready.index(s), phase)
        qk = gl.zeros([GROUP_ROWS, BLOCK_N], gl.float32, layout=s_layout)
        qk = warpgroup_mma(q, k_bufs.index(s).permute((1, 0)), qk, use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))
        p, alpha, m_i, l_i = probabilities(qk, m_i, l_i, full_count == 0, offs_q, start_n, code, n_ctx, qk_scale,
                                           tile_mask, mask_args, start_m, s_layout, BLOCK_N)
        p_op = gl.convert_layout(p.to(dtype), p_layout)
        for i in range(1, total):
            # -- issue tile i's scores, then tile i − 1's values product --
            s_next, phase_next = ring_slot(kv_count + 1, STAGES)
            start_n = walk_start(i, full_idx, full_lo, full_count, partial_idx, partial_lo, BLOCK_N)
            mbarrier.wait(k_ready.index(s_next), phase_next)
            qk = gl.zeros([GROUP_ROWS, BLOCK_N], gl.float32, layout=s_layout)
            qk = warpgroup_mma(q, k_bufs.index(s_next).permute((1, 0)), qk, use_acc=False, is_async=True)
            mbarrier.wait(v_ready.index(s), phase)
            acc = warpgroup_mma(p_op, v_bufs.index(s), acc, is_async=True)
            # -- tile i's softmax while the values product runs --
            qk, p_op = warpgroup_mma_wait(num_outstanding=1, deps=(qk, p_op))
            p, alpha, m_i, l_i = probabilities(qk, m_i, l_i, i >= full_count, offs_q, start_n, code, n_ctx,
                                               qk_scale, tile_mask, mask_args, start_m, s_layout, BLOCK_N)
            acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
            mbarrier.arrive(kv_empty.index(s), count=1)
            acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
            p_op = gl.convert_layout(p.to(dtype), p_layout)
            kv_count += 1
            s = s_next
            phase = phase_next
        # -- epilogue: the last tile's values product --
        mbarrier.wait(v_ready.index(s), phase)
        acc = warpgroup_mma(p_op, v_bufs.index(s), acc, is_async=True)
        acc, p_op = warpgroup_mma_wait(num_outstanding=0, deps=(acc, p_op))
        mbarrier.arrive(kv_empty.index(s), count=1)
        kv_count += 1
    return acc, m_i, l_i, kv_count


@gluon.jit
def finish_half(ODesc, o_buf, Lse, acc, m_i, l_i, b, h, bh, start_m, n_ctx, stride_ob, stride_oh,
                o_layout: gl.constexpr, HEAD_DIM: gl.constexpr):
    # Normalise a half's 64 rows and store them with their lse (natural log), as finish_rows does:
    # the rows through the half's shared buffer by one bulk copy, which runs while the half goes on
    # to its next row (the copy before it has left the buffer first).
    rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    l_o = gl.convert_layout(l_i, rows)
    m_o = gl.convert_layout(m_i, rows)
    empty = l_o == 0.0
    l_safe = gl.where(empty, 1.0, l_o)
    out = acc / l_safe[:, None]
    offs_m = start_m + gl.arange(0, GROUP_ROWS, layout=rows)
    tma.store_wait(0)
    copy_rows_out(ODesc, o_buf, out, b * (stride_ob // HEAD_DIM) + h * (stride_oh // HEAD_DIM) + start_m)
    lse = gl.where(empty, float("-inf"), (m_o + gl.log2(l_safe)) * LN2)
    gl.store(Lse + bh.to(gl.int64) * n_ctx + offs_m, lse)


@gluon.jit
def keep_rows(work, item, rows, layout: gl.constexpr, BLOCK: gl.constexpr, HALF: gl.constexpr, WIDTH: gl.constexpr):
    """A half's 64 float32 rows (`layout`) of work item `item`'s [BLOCK, WIDTH] partial in a chunk
    workspace (chunks.workspace: the unpersisted kernels' chunk program `item`'s partial)."""
    first = item.to(gl.int64) * BLOCK + HALF * GROUP_ROWS
    offs_r = first + gl.arange(0, GROUP_ROWS, layout=gl.SliceLayout(1, layout))
    offs_c = gl.arange(0, WIDTH, layout=gl.SliceLayout(0, layout))
    gl.store(work + offs_r[:, None] * WIDTH + offs_c[None, :], rows)


@gluon.jit
def keep_terms(work, item, terms, layout: gl.constexpr, BLOCK: gl.constexpr, HALF: gl.constexpr):
    """A half's 64 float32 row terms (`layout`: m or l of the online softmax) of work item `item` in a
    chunk workspace of [BLOCK] per item."""
    first = item.to(gl.int64) * BLOCK + HALF * GROUP_ROWS
    gl.store(work + first + gl.arange(0, GROUP_ROWS, layout=layout), terms)


@gluon.jit
def copy_rows_out(desc, buf, rows, row):
    """64 rows from registers to global memory at row `row` of `desc`'s (rows, head dim) view: written
    into the shared buffer `buf` (in its tile's layout), then one bulk tensor copy, not waited for (the
    caller waits with `tma.store_wait` before the buffer is written or refilled)."""
    gl.thread_barrier()  # every warp of the partition is past its last use of the buffer
    buf.store(rows.to(desc.dtype))
    fence_async_shared()
    gl.thread_barrier()
    tma.async_copy_shared_to_global(desc, [row.to(gl.int32), 0], buf)


@gluon.jit
def ring_barriers(STAGES: gl.constexpr):
    """The rings' barriers, initialised, and the work items' slots: (q_ready, q_empty, k_ready, v_ready,
    kv_empty, row_ids); the empty barriers count the two computing partitions' arrivals."""
    q_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    row_ids = gl.allocate_shared_memory(gl.int32, [2, ITEM_FIELDS], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    for i in gl.static_range(2):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=CONSUMERS)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(kv_empty.index(i), count=CONSUMERS)
    return q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids


@gluon.jit
def maskc_forward_ws(
    QDesc, KDesc, VDesc, ODesc, Lse, counter,
    stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh, stride_ob, stride_oh,
    head_layout, table_of_head, table_stride, layouts, row_order, full_ptr, full_idx, partial_ptr, partial_idx,
    partial_halves, qk_scale, n_ctx, heads, group, batch_heads, row_tiles, long_rows, items,
    tile_mask: gl.constexpr, mask_args, chunk_line, chunk_start, chunk_tiles, chunk_items, AccWork, MWork, LWork,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, OVERLAP: gl.constexpr, HALF_KINDS: gl.constexpr, SPLIT: gl.constexpr,
):
    # Shared buffers and barriers, then the partitions: the default one (this kernel's num_warps = 4)
    # loads, two workers of one warp group each compute.
    # (the overlapped walk holds a tile's stage while it waits for the next tile's keys)
    gl.static_assert(STAGES >= 2, "the key/value ring needs two stages or more")
    gl.static_assert(not (HALF_KINDS and OVERLAP), "half kinds serve the walk without overlap")
    dtype: gl.constexpr = QDesc.dtype
    q_bufs = gl.allocate_shared_memory(dtype, [2, BLOCK_M, HEAD_DIM], QDesc.layout)
    k_bufs, v_bufs = buffer_pair(KDesc, VDesc, STAGES, BLOCK_N, HEAD_DIM)
    q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids = ring_barriers(STAGES)
    # Each partition's arguments as one tuple, apart from its compile-time ones: assigned to a name, a
    # tuple holds neither a function (the predicate) nor constants.
    loader = (QDesc, KDesc, VDesc, q_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty,
              row_ids, counter, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
              row_order, head_layout, table_of_head, table_stride, layouts, full_ptr, full_idx, partial_ptr,
              partial_idx, heads, group, batch_heads, row_tiles, long_rows, items,
              QDesc, q_bufs, stride_qb, stride_qh,  # no dO tiles: the query's stand in, unused
              (chunk_line, chunk_start, chunk_tiles, chunk_items))
    o_bufs = gl.allocate_shared_memory(dtype, [CONSUMERS, GROUP_ROWS, HEAD_DIM], ODesc.layout)
    computer = (q_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, v_ready, kv_empty, row_ids, ODesc, o_bufs, Lse,
                stride_ob, stride_oh, full_idx, partial_idx, partial_halves, qk_scale, n_ctx, heads, items,
                chunk_items, AccWork, MWork, LWork)
    gl.warp_specialize(
        [
            (issue_loads, (loader, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, False, SPLIT)),
            (attend_rows, (computer, tile_mask, mask_args, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, OVERLAP, 0,
                           HALF_KINDS, SPLIT)),
            (attend_rows, (computer, tile_mask, mask_args, BLOCK_M, BLOCK_N, HEAD_DIM, STAGES, OVERLAP, 1,
                           HALF_KINDS, SPLIT)),
        ],
        [4, 4],
        [CONSUMER_REGS, CONSUMER_REGS],
    )
