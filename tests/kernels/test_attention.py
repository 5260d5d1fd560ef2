"""Reference pool attention vs. a naive per-row dense causal attention (fp64 softmax)."""

from __future__ import annotations

import pytest
import torch

from arborlm.kernels import cascade as cascade_mod
from arborlm.kernels.attention import attention, build_metadata
from arborlm.kernels.cascade import CASCADE_MIN_PREFIX


def naive(q, k_buffer, v_buffer, table, rows, prefix_lens, extend_lens, scale):
    """Per row: keys = all of the row's slots, query i sees keys [0, prefix + i]; GQA by repeat."""
    outs = []
    t = 0
    num_heads, num_kv = q.shape[1], k_buffer.shape[1]
    for row, pre, ext in zip(rows, prefix_lens, extend_lens, strict=True):
        slots = table[row, : pre + ext].long()
        kk = k_buffer[slots].double().repeat_interleave(num_heads // num_kv, dim=1)  # [S, H, D]
        vv = v_buffer[slots].double().repeat_interleave(num_heads // num_kv, dim=1)
        qq = q[t : t + ext].double()  # [L, H, D]
        scores = torch.einsum("lhd,shd->hls", qq, kk) * scale
        allowed = torch.arange(pre + ext)[None, :] <= (torch.arange(ext)[:, None] + pre)
        scores = scores.masked_fill(~allowed[None], float("-inf"))
        outs.append(torch.einsum("hls,shd->lhd", scores.softmax(-1), vv))
        t += ext
    return torch.cat(outs).to(q.dtype)


def run_case(extend_lens, prefix_lens, num_heads, num_kv, head_dim=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    n = len(extend_lens)
    total = sum(p + e for p, e in zip(prefix_lens, extend_lens, strict=True))
    num_slots = total + 50
    max_ctx = max(p + e for p, e in zip(prefix_lens, extend_lens, strict=True)) + 7
    k_buffer = torch.randn(num_slots, num_kv, head_dim, generator=g).to(dtype)
    v_buffer = torch.randn(num_slots, num_kv, head_dim, generator=g).to(dtype)
    k_buffer[0] = 0
    v_buffer[0] = 0
    # stale garbage everywhere in the table: readers must mask past each row's length
    table = torch.randint(1, num_slots, (n + 5, max_ctx), generator=g, dtype=torch.int32)
    rows = torch.randperm(n + 5, generator=g)[:n].tolist()
    perm = (torch.randperm(num_slots - 1, generator=g) + 1).tolist()  # random slots, never 0
    out_slots = []
    off = 0
    for row, pre, ext in zip(rows, prefix_lens, extend_lens, strict=True):
        slots = perm[off : off + pre + ext]
        off += pre + ext
        table[row, : pre + ext] = torch.tensor(slots, dtype=torch.int32)
        out_slots.extend(slots[pre:])
    t = sum(extend_lens)
    q = torch.randn(t, num_heads, head_dim, generator=g).to(dtype)
    k = torch.randn(t, num_kv, head_dim, generator=g).to(dtype)
    v = torch.randn(t, num_kv, head_dim, generator=g).to(dtype)
    scale = head_dim**-0.5
    meta = build_metadata(table, rows, prefix_lens, extend_lens, torch.tensor(out_slots))
    kb, vb = k_buffer.clone(), v_buffer.clone()
    out = attention(q, k, v, kb, vb, meta, scale)
    # the new K/V landed at out_slots, nothing else changed
    torch.testing.assert_close(kb[out_slots], k)
    torch.testing.assert_close(vb[out_slots], v)
    untouched = torch.ones(num_slots, dtype=torch.bool)
    untouched[out_slots] = False
    assert torch.equal(kb[untouched], k_buffer[untouched])
    expected = naive(q, kb, vb, table, rows, prefix_lens, extend_lens, scale)
    assert out.shape == (t, num_heads, head_dim)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out, expected, atol=tol, rtol=tol)
    return meta


@pytest.mark.parametrize("num_heads,num_kv", [(4, 4), (8, 2), (9, 3), (6, 1)])
def test_mixed_extend_and_decode(num_heads, num_kv):
    extend_lens = [1, 37, 1, 1, 5, 120, 1, 2]
    prefix_lens = [0, 0, 40, 3, 17, 9, 150, 0]
    meta = run_case(extend_lens, prefix_lens, num_heads, num_kv, seed=num_heads)
    assert meta.num_decode == 4 and len(meta.extend_rows) == 4


@pytest.mark.parametrize("n", [1, 33])
def test_pure_decode(n):
    g = torch.Generator().manual_seed(n)
    prefix_lens = torch.randint(0, 90, (n,), generator=g).tolist()
    meta = run_case([1] * n, prefix_lens, 9, 3, seed=n)
    assert meta.all_decode and meta.decode_q_idx is None


def test_decode_rows_of_very_different_lengths_are_grouped():
    """Long and short rows attend in separate padded groups; the output keeps the batch order."""
    prefix_lens = [4, 700, 6, 650, 2, 9, 300, 5, 310]
    meta = run_case([1] * len(prefix_lens), prefix_lens, 9, 3, seed=11)
    assert len(meta.decode_groups) > 1 and meta.decode_unsort is not None
    grouped = sorted(sorted(g.rows.tolist()) for g in meta.decode_groups if g.rows is not None)
    assert sorted(i for g in grouped for i in g) == list(range(len(prefix_lens)))
    # the short rows never pay for the 701-token row
    short = next(g for g in meta.decode_groups if g.rows is not None and 0 in g.rows.tolist())
    assert short.max_len < 20


def _group_cost(lens, groups, cost):
    return sum(cost + len(g) * max(lens[i] for i in g) for g in groups)


@pytest.mark.parametrize("seed", range(6))
def test_plan_groups_is_an_optimal_partition(seed):
    """Against brute force over all contiguous partitions of the sorted rows (small n)."""
    import itertools

    from arborlm.kernels.attention import plan_groups

    g = torch.Generator().manual_seed(seed)
    n = 9
    lens = torch.randint(1, 400, (n,), generator=g).tolist()
    cost = [0, 100, 640, 10_000][seed % 4]
    groups = plan_groups(lens, cost)
    assert sorted(i for grp in groups for i in grp) == list(range(n))
    order = sorted(range(n), key=lambda i: -lens[i])
    best = min(
        _group_cost(lens, [order[a:b] for a, b in itertools.pairwise((0, *cuts, n))], cost)
        for k in range(n)
        for cuts in itertools.combinations(range(1, n), k)
    )
    assert _group_cost(lens, groups, cost) == best
    if cost == 10_000:
        assert len(groups) == 1


def test_decode_equal_lengths_has_no_mask():
    meta = run_case([1] * 5, [20] * 5, 8, 2)
    assert len(meta.decode_groups) == 1 and meta.decode_groups[0].mask is None


@pytest.mark.parametrize("pre", [0, 1, 64])
def test_single_long_extend(pre):
    run_case([300], [pre], 8, 2, seed=pre)


def test_many_rows_mixed_batch_33():
    g = torch.Generator().manual_seed(7)
    extend_lens = [1 if i % 3 else int(torch.randint(2, 40, (1,), generator=g)) for i in range(33)]
    prefix_lens = [int(torch.randint(0, 60, (1,), generator=g)) for _ in range(33)]
    run_case(extend_lens, prefix_lens, 4, 2, seed=7)


def test_bfloat16():
    run_case([1, 30, 1], [10, 5, 0], 9, 3, head_dim=64, dtype=torch.bfloat16)


def test_mismatched_lengths_raise():
    table = torch.zeros(2, 8, dtype=torch.int32)
    with pytest.raises(ValueError):
        build_metadata(table, [0], [0], [3], torch.tensor([1, 2], dtype=torch.int64))


# ---------------------------------------------------------------- cascade (shared-prefix decode)


def shared_contexts(shared: int, own_lens: list[int], seed: int, loners: int = 0) -> list[list[int]]:
    """Slot lists: every row = the same `shared` slots + its own `own_lens[i]` fresh slots (the last
    one is the token being decoded); `loners` extra rows of fresh slots only (share nothing)."""
    g = torch.Generator().manual_seed(seed)
    need = shared + sum(own_lens) + loners * 90 + 1
    perm = (torch.randperm(need + 20, generator=g)[:need] + 1).tolist()
    common, off = perm[:shared], shared
    rows = []
    for own in own_lens:
        rows.append(common + perm[off : off + own])
        off += own
    for i in range(loners):
        rows.append(perm[off : off + 60 + i])
        off += 60 + i
    return rows


def decode_case(contexts, num_heads, num_kv, head_dim=16, dtype=torch.float32, seed=0, extend_first=0):
    """Decode every context's last token (optionally after one extend row of `extend_first` tokens):
    returns (meta with cascade allowed, its output, the plain path's output, the naive reference)."""
    g = torch.Generator().manual_seed(seed)
    num_slots = max(max(c) for c in contexts) + 1 + extend_first
    max_ctx = max(len(c) for c in contexts) + 5
    n = len(contexts) + (1 if extend_first else 0)
    kb = torch.randn(num_slots, num_kv, head_dim, generator=g).to(dtype)
    vb = torch.randn(num_slots, num_kv, head_dim, generator=g).to(dtype)
    table = torch.randint(1, num_slots, (n + 3, max_ctx), generator=g, dtype=torch.int32)  # stale garbage
    rows = torch.randperm(n + 3, generator=g)[:n].tolist()
    prefix_lens, extend_lens, out_slots = [], [], []
    if extend_first:  # an extend row over fresh slots at the top of the pool (no prefix)
        slots = list(range(num_slots - extend_first, num_slots))
        table[rows[0], :extend_first] = torch.tensor(slots, dtype=torch.int32)
        prefix_lens.append(0)
        extend_lens.append(extend_first)
        out_slots.extend(slots)
    for row, ctx in zip(rows[1 if extend_first else 0 :], contexts, strict=True):
        table[row, : len(ctx)] = torch.tensor(ctx, dtype=torch.int32)
        prefix_lens.append(len(ctx) - 1)
        extend_lens.append(1)
        out_slots.append(ctx[-1])
    t = sum(extend_lens)
    q = torch.randn(t, num_heads, head_dim, generator=g).to(dtype)
    k = torch.randn(t, num_kv, head_dim, generator=g).to(dtype)
    v = torch.randn(t, num_kv, head_dim, generator=g).to(dtype)
    scale = head_dim**-0.5
    outs = []
    for use in (True, False):
        meta = build_metadata(table, rows, prefix_lens, extend_lens, torch.tensor(out_slots), cascade=use)
        kk, vv = kb.clone(), vb.clone()
        outs.append((meta, attention(q, k, v, kk, vv, meta, scale)))
    (meta_on, out_on), (meta_off, out_off) = outs
    assert meta_off.cascade is None
    expected = naive(q, kk, vv, table, rows, prefix_lens, extend_lens, scale)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out_on, expected, atol=tol, rtol=tol)
    torch.testing.assert_close(out_on, out_off, atol=tol, rtol=tol)
    return meta_on


GQA = [(9, 3), (8, 2), (4, 4)]


@pytest.fixture(params=[True, False], ids=["flash_cpu", "manual"])
def flash_mode(request, monkeypatch):
    monkeypatch.setattr(cascade_mod, "USE_FLASH_CPU", request.param)


@pytest.mark.parametrize("num_heads,num_kv", GQA)
@pytest.mark.parametrize("n", [1, 2, 33, 64])
def test_cascade_shared_prefix(n, num_heads, num_kv, flash_mode):
    g = torch.Generator().manual_seed(n)
    own = torch.randint(1, 40, (n,), generator=g).tolist()
    own[0] = 1  # a row whose whole context is the shared prefix + its new token
    meta = decode_case(shared_contexts(150, own, seed=n), num_heads, num_kv, seed=n)
    if n == 1:
        assert meta.cascade is None
    else:
        assert meta.cascade is not None and meta.cascade.prefix_len == 150
        assert meta.cascade.suffix_len == max(own) and not meta.decode_groups


@pytest.mark.parametrize("shared", [CASCADE_MIN_PREFIX - 1, CASCADE_MIN_PREFIX, CASCADE_MIN_PREFIX + 1])
def test_cascade_threshold(shared):
    meta = decode_case(shared_contexts(shared, [1, 5, 30, 2], seed=shared), 9, 3, seed=shared)
    assert (meta.cascade is not None) == (shared >= CASCADE_MIN_PREFIX)
    if meta.cascade is not None:
        assert meta.cascade.prefix_len == shared


def test_cascade_all_rows_prefix_plus_one_token(flash_mode):
    """Equal lengths: no padding mask; the LCP is capped so each row keeps its new token."""
    meta = decode_case(shared_contexts(100, [1] * 7, seed=3), 8, 2, seed=3)
    c = meta.cascade
    assert c is not None and c.prefix_len == 100 and c.suffix_len == 1 and c.suffix_mask is None


def test_cascade_identical_rows_capped():
    """Rows with the very same slots (degenerate): LCP capped at len - 1, still exact."""
    ctx = shared_contexts(80, [10], seed=4)[0]
    meta = decode_case([ctx, ctx, ctx], 4, 4, seed=4)
    assert meta.cascade is not None and meta.cascade.prefix_len == 89 and meta.cascade.suffix_len == 1


def test_cascade_partial_sharing_uses_common_part():
    """Most rows share 200 slots, one shares only the first 100: P = 100."""
    rows = shared_contexts(200, [3, 9, 1, 20], seed=5)
    odd = rows[0][:100] + list(range(max(max(r) for r in rows) + 1, max(max(r) for r in rows) + 31))
    meta = decode_case(rows + [odd], 9, 3, seed=5)
    assert meta.cascade is not None and meta.cascade.prefix_len == 100


@pytest.mark.parametrize("num_heads,num_kv", GQA)
def test_cascade_fallback_when_a_row_shares_nothing(num_heads, num_kv):
    meta = decode_case(shared_contexts(150, [4, 8, 1], seed=6, loners=2), num_heads, num_kv, seed=6)
    assert meta.cascade is None and meta.decode_groups


def test_cascade_short_row_below_threshold_falls_back():
    """A row whose whole context is shorter than the threshold caps P below it."""
    rows = shared_contexts(150, [4, 8], seed=7)
    meta = decode_case(rows + [rows[0][:CASCADE_MIN_PREFIX]], 9, 3, seed=7)
    assert meta.cascade is None


@pytest.mark.parametrize("num_heads,num_kv", GQA)
def test_cascade_bfloat16(num_heads, num_kv, flash_mode):
    own = [1, 80, 7, 33, 2, 64, 5, 12]
    meta = decode_case(
        shared_contexts(700, own, seed=8), num_heads, num_kv, head_dim=64, dtype=torch.bfloat16, seed=8
    )
    assert meta.cascade is not None and meta.cascade.prefix_len == 700


def test_cascade_in_mixed_batch(flash_mode):
    """Decode rows behind one prefix next to an extend row (decode_q_idx path)."""
    meta = decode_case(shared_contexts(120, [1, 6, 15, 3, 9], seed=9), 8, 2, seed=9, extend_first=23)
    assert meta.cascade is not None and meta.decode_q_idx is not None and len(meta.extend_rows) == 1
