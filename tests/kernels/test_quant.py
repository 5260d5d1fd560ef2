"""Weight-only quantized linears (kernels/quant.py) against their dequantized float32 reference, on
awkward shapes (1 and 33 rows; widths not a multiple of the group or of the int4 kernel's 16), and
GGUF block conversion (runtime/gguf_weights.py) against gguf's own dequantizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arborlm.kernels.quant import (
    DENSE_ROWS_MIN,
    Int4Groups,
    QuantLinear,
    concat_rows,
    dequantize,
    quantize_int4,
    quantize_int8,
)
from arborlm.runtime.gguf_weights import BLOCK_READERS, unpermute_rows

SHAPES = [(48, 100), (40, 96), (33, 577)]  # (out N, in K): K % 32 != 0, N % 16 != 0, both
QUANTIZERS = {"int8": quantize_int8, "int4-g32": quantize_int4, "int4-g64": lambda w: quantize_int4(w, 64)}


def _reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = x.float() @ w.t()
    return y if b is None else y + b.float()


@pytest.mark.parametrize("kind", sorted(QUANTIZERS))
@pytest.mark.parametrize("shape", SHAPES)
def test_quantize_error_is_within_half_a_step(kind: str, shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    w = torch.randn(*shape)
    rec = QUANTIZERS[kind](w)
    err = (dequantize(rec) - w).abs()
    if kind == "int8":
        step = rec.scale[:, None]
    else:
        assert isinstance(rec, Int4Groups)
        step = rec.scale.repeat_interleave(rec.group_size, dim=1)[:, : shape[1]]
    assert bool((err <= step / 2 + 1e-6).all())
    assert err.max() > 0  # it really quantized


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", sorted(QUANTIZERS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_rows", [1, 33])
def test_quant_linear_matches_dequantized_reference(dtype, kind: str, shape: tuple[int, int], num_rows: int) -> None:
    torch.manual_seed(1)
    n, k = shape
    rec = QUANTIZERS[kind](torch.randn(n, k) * 0.1)
    b = torch.randn(n).to(dtype)
    x = torch.randn(num_rows, k).to(dtype)
    ref = _reference(x, dequantize(rec), b)
    w_dense = dequantize(rec).to(dtype)

    def dense(v: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(v, w_dense, b)

    # the quantized kernel alone, and the dense path it hands big steps to
    for layer in (QuantLinear(rec, b, dtype, None), QuantLinear(rec, b, dtype, dense, dense_rows_min=2)):
        y = layer(x)
        assert y.shape == (num_rows, n) and y.dtype == dtype and y.is_contiguous()
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        scale = ref.abs().max().item()
        assert (y.float() - ref).abs().max().item() <= tol * scale, (kind, shape, num_rows)


def test_dense_path_is_used_from_the_threshold_on() -> None:
    rec = quantize_int8(torch.randn(32, 64))
    calls: list[int] = []

    def dense(v: torch.Tensor) -> torch.Tensor:
        calls.append(v.shape[0])
        return v @ dequantize(rec).t()

    layer = QuantLinear(rec, None, torch.float32, dense)
    layer(torch.randn(DENSE_ROWS_MIN - 1, 64))
    layer(torch.randn(DENSE_ROWS_MIN, 64))
    assert calls == [DENSE_ROWS_MIN]


def test_concat_rows_stacks_fused_layers() -> None:
    a, b = torch.randn(16, 64), torch.randn(32, 64)
    fused = concat_rows([quantize_int4(a), quantize_int4(b)])
    assert torch.equal(dequantize(fused), torch.cat([dequantize(quantize_int4(a)), dequantize(quantize_int4(b))]))
    with pytest.raises(ValueError, match="int8 and int4|same kind"):
        concat_rows([quantize_int8(a), quantize_int4(b)])
    with pytest.raises(ValueError, match="group_size=48"):
        quantize_int4(a, 48)


@pytest.mark.parametrize("type_name", sorted(BLOCK_READERS))
def test_gguf_blocks_convert_exactly(type_name: str) -> None:
    import gguf
    from gguf import quants

    qtype = gguf.GGMLQuantizationType[type_name]
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((24, 96)) * 0.05 + 0.01).astype(np.float32)
    raw = quants.quantize(w, qtype)
    expected = torch.from_numpy(quants.dequantize(raw, qtype).astype(np.float32))
    q, d, m = BLOCK_READERS[type_name](raw)
    rec = Int4Groups(torch.from_numpy(q), torch.from_numpy(d), torch.from_numpy(m), 32)
    assert torch.equal(dequantize(rec), expected)  # bit-exact: no float round trip
    x = torch.randn(33, 96)
    y = QuantLinear(rec, None, torch.float32)(x)
    assert torch.allclose(y, x @ expected.t(), rtol=1e-4, atol=1e-4)


def test_unpermute_rows_inverts_llama_cpp_permutation() -> None:
    num_heads, head_dim, k = 3, 8, 5
    w = torch.arange(num_heads * head_dim * k).view(num_heads * head_dim, k)
    # llama.cpp's converter: reshape(heads, 2, D/2, ...).swapaxes(1, 2)
    permuted = w.view(num_heads, 2, head_dim // 2, k).transpose(1, 2).reshape(w.shape)
    assert torch.equal(permuted[unpermute_rows(num_heads * head_dim, num_heads)], w)
