"""Reference attention over the token-indexed KV pool (pure torch; runs on any device).

The model calls only `attention(...)` with an `AttentionMetadata` built once per forward by
`build_metadata(...)`, so a faster kernel (Triton, FlashInfer-style) can replace this file's body
without the model knowing.

Layout: tokens of all rows are packed, row after row: q `[num_tokens, num_heads, head_dim]`.
Row r has `prefix_len[r]` tokens already in the pool and `extend_len[r]` new ones; its new query i
(0-based) sees keys `[0, prefix_len[r] + i]`, read through `req_to_token[req_pool_idx[r]]`.

Rows are split into two groups because their costs differ:
- decode rows (extend_len == 1): grouped by length (`decode_groups`); per group one padded gather
  of its K/V per layer (`k_buffer[req_to_token[rows, :group_max_len]]`, flattened index_select:
  ~4x faster than advanced indexing on CPU) and ONE batched `scaled_dot_product_attention` with a
  key-padding mask. One group padded to the longest row wastes most of the work when lengths differ
  (independent prompts of 49..243 tokens: ~half the gathered keys were padding); each extra group
  costs a few calls per layer, so `plan_groups` splits only where the padding saved pays for them.
- extend rows (extend_len > 1): one SDPA call per row. A row with no prefix uses its new K/V
  directly with `is_causal` (no gather); a row with a prefix gathers `[0, prefix+extend)` and uses
  an offset-causal mask. Looping per row keeps a long prompt from padding every decode row to its
  length (the quadratic waste of one big padded batch).

Measured and dropped: a persistent per-request K/V "mirror" that skips the gather while the batch is
unchanged (only the new token copied per step). The gather costs ~40% of decode attention, but it
leaves the rows hot in cache for SDPA; reading the mirror from memory cost about what the gather
saved, and end to end (32 independent prompts, bf16, 2 cores) it was no faster.

Native decode (`kernels/native_cpu.py`, CPU, fp32/bf16): when the runner passes the built library,
decode rows skip the gather and the grouping: the C++ kernel reads each row's keys in place through
the table (`NativeDecode`), which is what memory-bound decode attention needs. The grouped torch
path above is then its reference, and tests compare the two.

Cascade attention (`kernels/cascade.py`): when >= 2 decode rows share their first P >=
`CASCADE_MIN_PREFIX` KV slots (same slots, e.g. a few-shot prefix from the radix cache),
`build_metadata` records a `CascadeMeta` instead of the padded full gather: the shared slots `[P]`
and each row's own suffix `[n, S]`. `_decode` then attends to the prefix ONCE per layer for all rows
(queries stacked per kv head), to each row's suffix as a small padded batch, and merges the two by
log-sum-exp. Exact up to float rounding; `build_metadata(..., cascade=False)` keeps the plain path.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from arborlm.kernels import cascade as _cascade
from arborlm.kernels import native_cpu
from arborlm.kernels.cascade import CascadeMeta, cascade_decode


@dataclass
class ExtendRow:
    q_start: int  # first packed token of this row
    q_len: int  # extend_len (> 1)
    prefix_len: int
    kv_idx: torch.Tensor | None  # [prefix_len + q_len] int64 slots; None when prefix_len == 0
    mask: torch.Tensor | None  # [q_len, prefix_len + q_len] bool (True = attend); None when prefix_len == 0


@dataclass
class DecodeGroup:
    """Decode rows attended together: padded to the group's longest row."""

    rows: torch.Tensor | None  # [g] int64 indices among the decode rows; None = all, in order
    kv_idx: torch.Tensor  # [g * max_len] int64 slots, padding -> slot 0
    max_len: int
    mask: torch.Tensor | None  # [g, 1, 1, max_len] bool (True = attend); None = no padding


@dataclass
class NativeDecode:
    """Decode rows for the native CPU kernel (`native_cpu.cpp`): keys read in place, no gather."""

    lib: ctypes.CDLL
    table: torch.Tensor  # ReqToToken `[max_running, max_context]` int32
    rows: torch.Tensor  # [num_decode] int64 table rows
    lens: torch.Tensor  # [num_decode] int64 keys per row
    max_len: int


# The fixed cost of one more decode group (gathers + an SDPA call per layer), in padded key rows:
# measured on CPU, one call costs about as much as gathering and attending ~500-1000 key rows.
GROUP_COST_KEYS = 640
MAX_GROUP_CANDIDATES = 32  # plan over at most this many boundaries (the DP is quadratic in them)


def plan_groups(lens: list[int], cost: int = GROUP_COST_KEYS) -> list[list[int]]:
    """Partition rows (by index) into groups minimising sum(group_size * group_max_len + cost).

    Optimal groups are runs of the rows sorted by length (a row never belongs with longer rows than
    a shorter row does), so a DP over the sorted order finds them; boundaries are restricted to every
    ceil(n / MAX_GROUP_CANDIDATES)-th row to bound the Python work per step."""
    n = len(lens)
    order = sorted(range(n), key=lambda i: -lens[i])  # longest first
    step = -(-n // MAX_GROUP_CANDIDATES)
    cuts = list(range(0, n, step)) + [n]  # candidate boundaries in `order`
    best = [0] + [0] * (len(cuts) - 1)
    back = [0] * len(cuts)
    for j in range(1, len(cuts)):
        best[j], back[j] = min(
            (best[i] + cost + (cuts[j] - cuts[i]) * lens[order[cuts[i]]], i) for i in range(j)
        )
    groups: list[list[int]] = []
    j = len(cuts) - 1
    while j > 0:
        i = back[j]
        groups.append(order[cuts[i] : cuts[j]])
        j = i
    return groups[::-1]


@dataclass
class AttentionMetadata:
    """Everything attention needs that is the same for every layer; built once per forward."""

    num_tokens: int
    out_slots: torch.Tensor  # [num_tokens] int64: slot that receives token t's new K/V
    # decode group (rows with extend_len == 1)
    num_decode: int = 0
    decode_q_idx: torch.Tensor | None = None  # [num_decode] int64 packed token index; None = identity
    decode_groups: list[DecodeGroup] = field(default_factory=list)
    decode_unsort: torch.Tensor | None = None  # [num_decode]: cat(group outputs)[unsort] = row order
    # set instead of decode_groups when the native CPU kernel is in use
    native: NativeDecode | None = None
    # set instead of decode_groups when the decode rows share a long prefix
    cascade: CascadeMeta | None = None
    # extend group (rows with extend_len > 1), in batch order
    extend_rows: list[ExtendRow] = field(default_factory=list)

    @property
    def all_decode(self) -> bool:
        return self.num_decode == self.num_tokens


def build_metadata(
    req_to_token: torch.Tensor,
    req_pool_idx: list[int],
    prefix_lens: list[int],
    extend_lens: list[int],
    out_slots: torch.Tensor,
    cascade: bool = True,
    native: ctypes.CDLL | None = None,
) -> AttentionMetadata:
    """req_to_token `[max_running, max_context]` int32 (already holding every row's slots for all
    `prefix_len + extend_len` tokens); per-row lists; out_slots `[num_tokens]` int64.
    cascade=False never builds a cascade (plain decode path; for comparisons). native: the loaded
    `native_cpu` library, used for decode rows that no cascade covers (None: the torch path)."""
    device = req_to_token.device
    num_tokens = int(out_slots.shape[0])
    meta = AttentionMetadata(num_tokens=num_tokens, out_slots=out_slots)
    dec_rows: list[int] = []
    dec_lens: list[int] = []
    dec_q: list[int] = []
    q_start = 0
    for row, pre, ext in zip(req_pool_idx, prefix_lens, extend_lens, strict=True):
        if ext == 1:
            dec_rows.append(row)
            dec_lens.append(pre + 1)
            dec_q.append(q_start)
        elif ext > 1:
            kv_idx = mask = None
            if pre > 0:
                kv_idx = req_to_token[row, : pre + ext].to(torch.int64)
                # query i sees keys j <= pre + i
                j = torch.arange(pre + ext, device=device)
                i = torch.arange(ext, device=device)
                mask = j[None, :] <= (i[:, None] + pre)
            meta.extend_rows.append(ExtendRow(q_start, ext, pre, kv_idx, mask))
        q_start += ext
    if q_start != num_tokens:
        raise ValueError(f"extend_lens sum to {q_start} but out_slots has {num_tokens} tokens")
    if dec_rows:
        n = len(dec_rows)
        max_len = max(dec_lens)
        rows = torch.tensor(dec_rows, dtype=torch.int64, device=device)
        if dec_q != list(range(n)) or n != num_tokens:
            meta.decode_q_idx = torch.tensor(dec_q, dtype=torch.int64, device=device)
        meta.num_decode = n
        if cascade or native is None:  # both need the padded slot matrix
            min_len = min(dec_lens)
            idx = req_to_token[:, :max_len].index_select(0, rows).to(torch.int64)  # [n, max_len]
            valid = None
            if min_len != max_len:
                lens = torch.tensor(dec_lens, dtype=torch.int64, device=device)
                valid = torch.arange(max_len, device=device)[None, :] < lens[:, None]  # [n, max_len]
                idx.masked_fill_(~valid, 0)  # stale table cells -> padding slot 0 (always a valid index)
            if cascade:
                meta.cascade = _cascade.find_cascade(idx, valid, min_len, _cascade.CASCADE_MIN_PREFIX)
        if meta.cascade is None and native is not None:
            lens_t = torch.tensor(dec_lens, dtype=torch.int64, device=device)
            meta.native = NativeDecode(native, req_to_token, rows, lens_t, max_len)
        elif meta.cascade is None:
            _group_decode_rows(meta, idx, valid, dec_lens)
    return meta


def _group_decode_rows(meta: AttentionMetadata, idx: torch.Tensor, valid: torch.Tensor | None, lens: list[int]) -> None:
    """idx `[n, max_len]` decode slots (padding -> 0), valid `[n, max_len]` or None: fill decode_groups."""
    n, max_len = idx.shape
    groups = [list(range(n))] if valid is None else plan_groups(lens)
    if len(groups) == 1:
        mask = None if valid is None else valid[:, None, None, :]
        meta.decode_groups = [DecodeGroup(None, idx.reshape(-1), max_len, mask)]
        return
    device = idx.device
    for rows in groups:
        g_len = lens[rows[0]]  # rows come longest first
        g_rows = torch.tensor(rows, dtype=torch.int64, device=device)
        g_idx = idx.index_select(0, g_rows)[:, :g_len]
        mask = None
        if lens[rows[-1]] != g_len:
            mask = valid.index_select(0, g_rows)[:, None, None, :g_len].contiguous()  # type: ignore[union-attr]
        meta.decode_groups.append(DecodeGroup(g_rows, g_idx.reshape(-1), g_len, mask))
    order = torch.cat([g.rows for g in meta.decode_groups if g.rows is not None])
    meta.decode_unsort = torch.argsort(order)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """q `[T, H, D]`, new k/v `[T, Hkv, D]` (written to the buffers at `meta.out_slots` first),
    buffers `[num_slots, Hkv, D]`. Returns `[T, H, D]`."""
    k_buffer.index_copy_(0, meta.out_slots, k)
    v_buffer.index_copy_(0, meta.out_slots, v)
    if meta.all_decode and meta.decode_q_idx is None:
        return _decode(q, k_buffer, v_buffer, meta, scale)
    if not meta.num_decode and len(meta.extend_rows) == 1:
        return _extend_row(q, k, v, k_buffer, v_buffer, meta.extend_rows[0], scale)
    out = torch.empty_like(q)
    if meta.num_decode:
        assert meta.decode_q_idx is not None
        qd = q.index_select(0, meta.decode_q_idx)
        out.index_copy_(0, meta.decode_q_idx, _decode(qd, k_buffer, v_buffer, meta, scale))
    for row in meta.extend_rows:
        out[row.q_start : row.q_start + row.q_len] = _extend_row(q, k, v, k_buffer, v_buffer, row, scale)
    return out


def _decode(
    q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """q `[n, H, D]` (one query per row) -> `[n, H, D]`."""
    if meta.cascade is not None:
        return cascade_decode(q, k_buffer, v_buffer, meta.cascade, scale)
    if meta.native is not None:
        nd = meta.native
        return native_cpu.decode_attention(nd.lib, q, k_buffer, v_buffer, nd.table, nd.rows, nd.lens, nd.max_len, scale)
    n, num_heads, head_dim = q.shape
    num_kv = k_buffer.shape[1]
    # GQA without expanding K/V: query head h uses kv head h // G (transformers' repeat_kv order), so
    # the G query heads of one kv head become a "query length" of G; the key-padding mask does not
    # depend on the query, so this is exact (and measured ~15% faster than enable_gqa on CPU).
    qg = q.view(n, num_kv, num_heads // num_kv, head_dim)
    outs = []
    for grp in meta.decode_groups:
        qq = qg if grp.rows is None else qg.index_select(0, grp.rows)
        m, s = qq.shape[0], grp.max_len
        # [m*S, Hkv, D] -> [m, Hkv, S, D] (a strided view; SDPA accepts it)
        kk = k_buffer.index_select(0, grp.kv_idx).view(m, s, num_kv, head_dim).transpose(1, 2)
        vv = v_buffer.index_select(0, grp.kv_idx).view(m, s, num_kv, head_dim).transpose(1, 2)
        outs.append(F.scaled_dot_product_attention(qq, kk, vv, attn_mask=grp.mask, scale=scale))  # [m, Hkv, G, D]
    o = outs[0] if meta.decode_unsort is None else torch.cat(outs).index_select(0, meta.decode_unsort)
    return o.reshape(n, num_heads, head_dim)


def _extend_row(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_buffer: torch.Tensor,
    v_buffer: torch.Tensor,
    row: ExtendRow,
    scale: float,
) -> torch.Tensor:
    """One row's `[q_len, H, D]` output."""
    sl = slice(row.q_start, row.q_start + row.q_len)
    qr = q[sl].transpose(0, 1).unsqueeze(0)  # [1, H, L, D]
    if row.kv_idx is None:  # no prefix: the keys are exactly the new K/V
        kr, vr = k[sl], v[sl]
    else:
        kr = k_buffer.index_select(0, row.kv_idx)  # [S, Hkv, D]
        vr = v_buffer.index_select(0, row.kv_idx)
    kr = kr.transpose(0, 1).unsqueeze(0)  # [1, Hkv, S, D]
    vr = vr.transpose(0, 1).unsqueeze(0)
    o = F.scaled_dot_product_attention(
        qr,
        kr,
        vr,
        attn_mask=row.mask,
        is_causal=row.mask is None,
        scale=scale,
        enable_gqa=kr.shape[1] != qr.shape[1],
    )  # [1, H, L, D]
    return o[0].transpose(0, 1)
