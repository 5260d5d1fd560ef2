"""The native CPU kernels (decode attention, fused layer glue) against references: naive fp64 attention, the torch path, and transformers-style torch ops."""

from __future__ import annotations

import pytest
import torch

from arborlm.kernels import native_cpu
from arborlm.kernels.attention import attention, build_metadata
from arborlm.runtime.config import EngineConfig
from arborlm.runtime.model_runner import _native_kernels

# "portable": the same source built for baseline x86-64 (no AVX-512), i.e. the code path a CPU
# without AVX-512 runs: every test below runs on both builds.
PORTABLE_FLAGS = [f for f in native_cpu.FLAGS if f != "-march=native"] + ["-march=x86-64-v2"]


@pytest.fixture(scope="module", params=["native", "portable"])
def lib(request, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("kcache"))
    if request.param == "native":
        lib = native_cpu.load(cache)
        assert lib is not None, f"the native kernel must build on the test machine: {native_cpu.load_error()}"
        return lib
    return native_cpu.open_library(native_cpu._build(cache, PORTABLE_FLAGS))


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
    out = native_cpu.decode_attention(lib, q, kb, vb, table, rows_t, lens_t, max(lens), scale)
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
        native_cpu.decode_attention(lib, q, kb, kb, table, rows, lens, 4, 0.125)
    with pytest.raises(ValueError, match="does not fit"):  # 4 query heads over 3 kv heads
        cpu = torch.randn(10, 3, 64)
        native_cpu.decode_attention(lib, q.float(), cpu, cpu, table, rows, lens, 4, 0.125)
    with pytest.raises(ValueError, match="int32"):
        native_cpu.decode_attention(lib, q.float(), kb.float(), kb.float(), table.long(), rows, lens, 4, 0.125)


def test_build_is_cached_and_failure_falls_back(tmp_path, monkeypatch):
    built = native_cpu._build(str(tmp_path))
    mtime = built.stat().st_mtime_ns
    assert native_cpu._build(str(tmp_path)) == built and built.stat().st_mtime_ns == mtime  # no rebuild
    # no compiler: load() reports why, "auto" keeps the torch path, "native" raises naming the reason
    monkeypatch.setattr(native_cpu, "_state", {})
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    cfg = EngineConfig(cache_dir=str(tmp_path / "empty"))
    assert _native_kernels(cfg, torch.device("cpu"), torch.float32) is None
    assert "no-such-compiler-xyz" in (native_cpu.load_error() or "")
    with pytest.raises(RuntimeError, match="no-such-compiler-xyz"):
        _native_kernels(cfg.replace(kernel_backend="native"), torch.device("cpu"), torch.float32)


def test_backend_config_errors():
    with pytest.raises(ValueError, match="kernel_backend"):
        EngineConfig(kernel_backend="flash")
    with pytest.raises(ValueError, match="float16"):
        _native_kernels(EngineConfig(kernel_backend="native"), torch.device("cpu"), torch.float16)
    assert _native_kernels(EngineConfig(kernel_backend="torch"), torch.device("cpu"), torch.float32) is None


# ---- elementwise glue: against transformers' Llama ops written out in torch (same roundings) ----


def hf_rms_norm(h: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm."""
    hf = h.float()
    y = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)
    return w * y.to(h.dtype)


def assert_glue_close(out: torch.Tensor, ref: torch.Tensor) -> None:
    """fp32: to float rounding. bf16: equal but for rare one-ulp flips (sum order, exp polynomial)."""
    if out.dtype == torch.float32:
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=2e-6)
        return
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-6, rtol=2**-7)
    assert (out == ref).float().mean() > 0.99


DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])


@DTYPES
@pytest.mark.parametrize("rows,n", [(1, 576), (33, 576), (3, 17), (40, 5), (2, 1000)])
@pytest.mark.parametrize("with_delta", [True, False], ids=["add", "plain"])
def test_add_rms_norm(lib, dtype, rows, n, with_delta):
    gen = torch.Generator().manual_seed(rows * n)
    h = (torch.randn(rows, n, generator=gen) * 3).to(dtype)
    delta = torch.randn(rows, n, generator=gen).to(dtype) if with_delta else None
    w = torch.randn(n, generator=gen).to(dtype)
    h_ref = h + delta if with_delta else h.clone()
    x = native_cpu.add_rms_norm(lib, h, delta, w, 1e-5)
    assert torch.equal(h, h_ref)  # the residual add is one rounded op, done in place
    assert_glue_close(x, hf_rms_norm(h_ref, w, 1e-5))


@DTYPES
@pytest.mark.parametrize("rows,inter", [(1, 1536), (32, 1536), (5, 7), (9, 40)])
def test_silu_mul(lib, dtype, rows, inter):
    gen = torch.Generator().manual_seed(inter)
    gu = (torch.randn(rows, 2 * inter, generator=gen) * 4).to(dtype)
    gu[0, :3] = torch.tensor([-100.0, 95.0, 0.0])  # exp over/underflow ends of the polynomial
    y = native_cpu.silu_mul(lib, gu)
    assert_glue_close(y, torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:])


@DTYPES
@pytest.mark.parametrize("heads,d", [(12, 64), (3, 128), (5, 48), (2, 8)])
def test_rope_in_place(lib, dtype, heads, d):
    from arborlm.runtime.models.llama import TorchOps

    gen = torch.Generator().manual_seed(d)
    rows, num_pos = 33, 300
    wide = torch.randn(rows, heads * d + 20, generator=gen).to(dtype)  # q|k inside a wider qkv row
    x = wide[:, : heads * d].view(rows, heads, d)
    ang = torch.randn(num_pos, d // 2, generator=gen).repeat(1, 2)
    sign = torch.cat([-torch.ones(d // 2), torch.ones(d // 2)])
    cos, sin_signed = ang.cos().to(dtype), (ang.sin().to(dtype) * sign.to(dtype))
    positions = torch.randint(0, num_pos, (rows,), generator=gen)
    ops = TorchOps()
    ref = ops.rope(x.clone(), ops.rope_tables(cos, sin_signed, positions))
    untouched = wide[:, heads * d :].clone()
    native_cpu.rope_(lib, x, cos, sin_signed, positions)
    assert_glue_close(x, ref)
    assert torch.equal(wide[:, heads * d :], untouched)  # the v part of the row is not written
