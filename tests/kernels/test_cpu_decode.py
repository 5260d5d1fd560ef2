"""The native CPU decode kernel against references: a naive fp64 attention and the torch path."""

from __future__ import annotations

import pytest
import torch

from arborlm.kernels import cpu_decode
from arborlm.kernels.attention import attention, build_metadata
from arborlm.runtime.config import EngineConfig
from arborlm.runtime.model_runner import _native_decode


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    lib = cpu_decode.load(str(tmp_path_factory.mktemp("kcache")))
    assert lib is not None, f"the native kernel must build on the test machine: {cpu_decode.load_error()}"
    return lib


def naive(q, kb, vb, table, rows, lens, scale):
    """fp64, one row and head at a time: out[i, h] = softmax(q k^T * scale) v over the row's keys."""
    n, nh, d = q.shape
    g = nh // kb.shape[1]
    out = torch.empty(n, nh, d, dtype=torch.float64)
    for i in range(n):
        slots = table[rows[i], : lens[i]].long()
        for h in range(nh):
            k = kb[slots, h // g].double()
            v = vb[slots, h // g].double()
            p = torch.softmax(k @ q[i, h].double() * scale, dim=0)
            out[i, h] = p @ v
    return out


def make_case(gen, num_heads, num_kv, head_dim, lens, dtype, shared_rows=False):
    num_slots = sum(lens) + 7
    kb = torch.randn(num_slots, num_kv, head_dim, generator=gen).to(dtype)
    vb = torch.randn(num_slots, num_kv, head_dim, generator=gen).to(dtype)
    max_ctx = max(lens) + 5
    n = len(lens)
    num_table_rows = 1 if shared_rows else n + 2
    # stale cells past each row's length hold garbage slots: the kernel must not read them
    table = torch.randint(1, num_slots, (num_table_rows, max_ctx), generator=gen, dtype=torch.int32)
    rows = [0] * n if shared_rows else list(torch.randperm(n + 2, generator=gen)[:n].tolist())
    # q as a strided view of a wider tensor, as the model passes it ([T, H + Hkv, D][:, :H])
    wide = torch.randn(n, num_heads + num_kv, head_dim, generator=gen).to(dtype)
    q = wide[:, :num_heads]
    return q, kb, vb, table, rows


CASES = [
    # (num_heads, num_kv, head_dim, lens): the SmolLM2 shape, GQA groups of 1..6, D 32/48/64/128
    (9, 3, 64, [1, 2, 17, 300, 64, 33]),
    (8, 2, 64, [5, 129, 1]),
    (12, 2, 64, [70, 3]),
    (10, 2, 64, [40, 41]),
    (4, 4, 64, [9]),
    (8, 2, 128, [100, 1, 31]),
    (6, 6, 128, [12, 77]),
    (4, 2, 48, [23, 1, 50]),
    (2, 1, 32, [3, 200]),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", CASES, ids=[f"H{c[0]}kv{c[1]}D{c[2]}" for c in CASES])
def test_kernel_matches_naive(lib, dtype, case):
    num_heads, num_kv, head_dim, lens = case
    gen = torch.Generator().manual_seed(hash(case[:3]) % 1000)
    q, kb, vb, table, rows = make_case(gen, num_heads, num_kv, head_dim, lens, dtype)
    scale = head_dim**-0.5
    rows_t = torch.tensor(rows, dtype=torch.int64)
    lens_t = torch.tensor(lens, dtype=torch.int64)
    out = cpu_decode.decode_attention(lib, q, kb, vb, table, rows_t, lens_t, max(lens), scale)
    assert out.dtype == dtype and out.shape == q.shape
    ref = naive(q, kb, vb, table, rows, lens, scale)
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), ref, atol=2e-6, rtol=1e-5)
    else:  # fp32 inside, one rounding to bf16 at the end: within a bf16 ulp of the exact value
        torch.testing.assert_close(out.double(), ref, atol=1e-2, rtol=8e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_attention_native_path_matches_torch_path(lib, dtype):
    """Through `attention()`: mixed extend + decode rows, decode rows sharing one table row (draft
    verification splits a row into decode rows with growing lengths)."""
    gen = torch.Generator().manual_seed(3)
    num_heads, num_kv, head_dim = 9, 3, 64
    num_slots = 400
    kb = torch.randn(num_slots, num_kv, head_dim, generator=gen).to(dtype)
    vb = torch.randn(num_slots, num_kv, head_dim, generator=gen).to(dtype)
    table = torch.zeros(4, 256, dtype=torch.int32)
    table[0, :120] = torch.arange(1, 121)
    table[1, :40] = torch.arange(121, 161)
    table[2, :90] = torch.arange(161, 251)
    # rows: decode (len 120), extend of 6 after a prefix of 34, decode x3 of table row 2 (draft)
    rows, prefix_lens, extend_lens = [0, 1, 2, 2, 2], [119, 34, 87, 88, 89], [1, 6, 1, 1, 1]
    out_slots = torch.tensor([120, 155, 156, 157, 158, 159, 160, 248, 249, 250], dtype=torch.int64)
    t = len(out_slots)
    q = torch.randn(t, num_heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(t, num_kv, head_dim, generator=gen).to(dtype)
    v = torch.randn(t, num_kv, head_dim, generator=gen).to(dtype)
    outs = []
    for native in (lib, None):
        meta = build_metadata(table, rows, prefix_lens, extend_lens, out_slots, native=native)
        assert (meta.native is not None) == (native is not None)
        outs.append(attention(q, k, v, kb.clone(), vb.clone(), meta, head_dim**-0.5).float())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(outs[0], outs[1], atol=tol, rtol=tol)


def test_kernel_rejects_bad_inputs(lib):
    q = torch.randn(2, 4, 64, dtype=torch.float16)
    kb = torch.randn(10, 2, 64, dtype=torch.float16)
    table = torch.ones(2, 8, dtype=torch.int32)
    rows, lens = torch.tensor([0, 1]), torch.tensor([3, 4])
    with pytest.raises(ValueError, match="dtypes"):
        cpu_decode.decode_attention(lib, q, kb, kb, table, rows, lens, 4, 0.125)
    with pytest.raises(ValueError, match="int32"):
        cpu_decode.decode_attention(lib, q.float(), kb.float(), kb.float(), table.long(), rows, lens, 4, 0.125)


def test_build_is_cached_and_failure_falls_back(tmp_path, monkeypatch):
    built = cpu_decode._build(str(tmp_path))
    mtime = built.stat().st_mtime_ns
    assert cpu_decode._build(str(tmp_path)) == built and built.stat().st_mtime_ns == mtime  # no rebuild
    # no compiler: load() reports why, "auto" keeps the torch path, "native" raises naming the reason
    monkeypatch.setattr(cpu_decode, "_state", {})
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    cfg = EngineConfig(cache_dir=str(tmp_path / "empty"))
    assert _native_decode(cfg, torch.device("cpu"), torch.float32) is None
    assert "no-such-compiler-xyz" in (cpu_decode.load_error() or "")
    with pytest.raises(RuntimeError, match="no-such-compiler-xyz"):
        _native_decode(cfg.replace(attention_backend="native"), torch.device("cpu"), torch.float32)


def test_backend_config_errors():
    with pytest.raises(ValueError, match="attention_backend"):
        EngineConfig(attention_backend="flash")
    with pytest.raises(ValueError, match="float16"):
        _native_decode(EngineConfig(attention_backend="native"), torch.device("cpu"), torch.float16)
    assert _native_decode(EngineConfig(attention_backend="torch"), torch.device("cpu"), torch.float32) is None
