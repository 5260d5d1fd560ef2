"""Reference pool attention vs. a naive per-row dense causal attention (fp64 softmax)."""

from __future__ import annotations

import pytest
import torch

from arborlm.kernels.attention import attention, build_metadata


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


def test_decode_equal_lengths_has_no_mask():
    meta = run_case([1] * 5, [20] * 5, 8, 2)
    assert meta.decode_mask is None


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
