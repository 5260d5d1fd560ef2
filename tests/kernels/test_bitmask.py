"""Grammar bitmask: layout, the torch reference against a dense boolean oracle, and the Triton
kernel against the reference (on CPU through TRITON_INTERPRET=1)."""

from __future__ import annotations

import pytest
import torch

from arborlm.kernels import triton_bitmask
from arborlm.kernels.bitmask import (
    allocate_token_bitmask,
    apply_token_bitmask,
    apply_token_bitmask_torch,
    bitmask_words,
    pack_allowed,
    unpack_bitmask,
)

# (batch, vocab_size, V_padded, words): vocab not a multiple of 32, padded logits, a bitmask
# narrower than the logits, batch 1 and 33.
SHAPES = [(1, 100, 128, 4), (33, 77, 96, 3), (5, 64, 64, 2), (4, 70, 200, 3), (2, 1000, 1030, 32)]


def _oracle(logits: torch.Tensor, allowed: torch.Tensor, vocab_size: int, rows: list[int] | None) -> torch.Tensor:
    """Dense reimplementation: allowed bool [B, >=V_padded]; columns >= vocab_size always masked."""
    out = logits.clone()
    b, v = logits.shape
    keep = allowed[:, :v].clone()
    keep[:, vocab_size:] = False
    for r in range(b) if rows is None else rows:
        out[r][~keep[r]] = float("-inf")
    return out


def _random_case(b: int, v: int, vp: int, w: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, vp, generator=g)
    allowed = torch.rand(b, w * 32, generator=g) < 0.4
    allowed[0] = False  # an all-zero row
    if b > 1:
        allowed[1] = True  # an all-one row
    return logits, pack_allowed(allowed), torch.cat([allowed, torch.zeros(b, max(0, vp - 32 * w), dtype=torch.bool)], 1)


def test_layout_bit_j_of_word_w_is_token_32w_plus_j() -> None:
    bm = torch.zeros(1, 3, dtype=torch.int32)
    bm[0, 1] = 1 << 5  # token 37
    bm[0, 2] = -(2**31)  # bit 31 of word 2: token 95 (the sign bit)
    allowed = unpack_bitmask(bm, 96)[0]
    assert allowed.nonzero().flatten().tolist() == [37, 95]
    x = torch.zeros(1, 96)
    apply_token_bitmask_torch(x, bm)
    assert torch.isfinite(x[0]).nonzero().flatten().tolist() == [37, 95]


def test_pack_unpack_roundtrip_and_allocate() -> None:
    allowed = torch.rand(3, 70) < 0.5
    assert torch.equal(unpack_bitmask(pack_allowed(allowed), 70), allowed)
    assert bitmask_words(64) == 2 and bitmask_words(65) == 3
    bm = allocate_token_bitmask(2, 65)
    assert bm.shape == (2, 3) and bm.dtype == torch.int32 and bool((bm == -1).all())
    x = torch.randn(2, 80)
    apply_token_bitmask_torch(x, bm, vocab_size=65)
    assert torch.isfinite(x[:, :65]).all() and torch.isinf(x[:, 65:]).all()


@pytest.mark.parametrize("b,v,vp,w", SHAPES)
@pytest.mark.parametrize("use_rows", [False, True])
def test_torch_reference_matches_oracle(b: int, v: int, vp: int, w: int, use_rows: bool) -> None:
    logits, bm, allowed = _random_case(b, v, vp, w, seed=b * 1000 + v)
    rows = [r for r in range(b) if r % 2 == 0] if use_rows else None
    expected = _oracle(logits, allowed, v, rows)
    got = apply_token_bitmask_torch(logits.clone(), bm, vocab_size=v, indices=rows)
    assert torch.equal(got, expected)
    if rows is not None and b > 1:  # untouched rows stay bit-identical
        assert torch.equal(got[1], logits[1])


def test_in_place_and_empty_indices_and_dispatcher_on_cpu() -> None:
    logits, bm, _ = _random_case(3, 40, 64, 2, seed=1)
    x = logits.clone()
    assert apply_token_bitmask(x, bm, 40) is x
    assert torch.equal(x, apply_token_bitmask_torch(logits.clone(), bm, 40))
    y = logits.clone()
    apply_token_bitmask(y, bm, 40, indices=[])
    assert torch.equal(y, logits)


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="int32"):
        apply_token_bitmask(torch.zeros(2, 32), torch.zeros(2, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="rows"):
        apply_token_bitmask(torch.zeros(2, 32), torch.zeros(3, 1, dtype=torch.int32))


def test_module_imports_without_triton_flag() -> None:
    assert isinstance(triton_bitmask.HAVE_TRITON, bool)
    if not triton_bitmask.HAVE_TRITON:
        assert triton_bitmask.TRITON_IMPORT_ERROR


triton_only = pytest.mark.skipif(
    not triton_bitmask.HAVE_TRITON,
    reason=f"triton is not importable ({triton_bitmask.TRITON_IMPORT_ERROR}); install the [triton] extra",
)


@triton_only
@pytest.mark.parametrize("b,v,vp,w", SHAPES)
@pytest.mark.parametrize("use_rows", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_interpreter_matches_reference(monkeypatch: pytest.MonkeyPatch, b: int, v: int, vp: int, w: int,
                                              use_rows: bool, dtype: torch.dtype) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # read when the kernel is jitted (lazily, per mode)
    logits, bm, _ = _random_case(b, v, vp, w, seed=b * 7 + v)
    logits = logits.to(dtype)
    rows = [r for r in range(b) if r % 3 != 1] if use_rows else None
    expected = apply_token_bitmask_torch(logits.clone(), bm, vocab_size=v, indices=rows)
    got = triton_bitmask.apply_token_bitmask_triton(logits.clone(), bm, vocab_size=v, indices=rows)
    assert torch.equal(got, expected)


@triton_only
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dispatcher_uses_triton_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for b, v, vp, w in SHAPES:
        logits, bm, _ = _random_case(b, v, vp, w, seed=v)
        expected = apply_token_bitmask_torch(logits.clone(), bm, vocab_size=v)
        got = apply_token_bitmask(logits.cuda(), bm, vocab_size=v, indices=list(range(b)))
        assert torch.equal(got.cpu(), expected)
