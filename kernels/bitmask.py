"""Grammar token bitmask: layout, allocation, and applying it to logits.

Bit layout (shared with `arborlm.constrain`, which fills rows, and the Triton kernel):

    bitmask: int32 [batch, ceil(vocab_size / 32)]
    token t is ALLOWED  <=>  (bitmask[row, t // 32] >> (t % 32)) & 1 == 1

i.e. word w holds tokens 32*w .. 32*w + 31, least-significant bit first. A row of all ones
(-1 as int32) allows everything; all zeros allows nothing. Columns of `logits` at or past
`vocab_size` (the tokenizer's vocab; the model's lm_head is often padded wider), or past the
bitmask's coverage (32 * words), are always masked.

Rows: `bitmask` is row-aligned with `logits` (bitmask row i masks logits row i). `indices`
restricts the work to some rows so a batch with few constrained requests pays only for those.

`apply_token_bitmask` picks the Triton kernel for CUDA tensors when triton imports, else the
pure-torch reference `apply_token_bitmask_torch`; both write -inf into `logits` in place.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

from . import triton_bitmask

BITS_PER_WORD = 32

Indices = Sequence[int] | torch.Tensor | None


def bitmask_words(vocab_size: int) -> int:
    """Number of int32 words per row: ceil(vocab_size / 32)."""
    return (vocab_size + BITS_PER_WORD - 1) // BITS_PER_WORD


def allocate_token_bitmask(batch: int, vocab_size: int, device: torch.device | str = "cpu",
                           pin_memory: bool = False) -> torch.Tensor:
    """int32 [batch, ceil(vocab_size/32)] filled with -1 (all bits set: every token allowed).

    Filled on the CPU by grammar matchers; `pin_memory=True` lets the copy to the GPU be non_blocking.
    """
    return torch.full((batch, bitmask_words(vocab_size)), -1, dtype=torch.int32, device=device,
                      pin_memory=pin_memory)


def pack_allowed(allowed: torch.Tensor) -> torch.Tensor:
    """bool [..., V] (True = allowed) -> int32 [..., ceil(V/32)] in the layout above.

    A convenience for tests and for matchers that compute a dense boolean mask.
    """
    *lead, v = allowed.shape
    words = bitmask_words(v)
    padded = torch.zeros(*lead, words * BITS_PER_WORD, dtype=torch.int64, device=allowed.device)
    padded[..., :v] = allowed.to(torch.int64)
    weights = torch.ones(BITS_PER_WORD, dtype=torch.int64, device=allowed.device) << torch.arange(
        BITS_PER_WORD, device=allowed.device)
    packed = (padded.view(*lead, words, BITS_PER_WORD) * weights).sum(-1)  # [..., W] in [0, 2^32)
    # Reinterpret as signed 32-bit (two's complement) without overflow errors.
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.to(torch.int32)


_BYTE_BITS: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}


def _bits_as(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool bits as themselves (dtype=bool) or as the additive mask 0.0 (set) / -inf (clear)."""
    if dtype == torch.bool:
        return bits
    return torch.zeros(bits.shape, dtype=dtype, device=bits.device).masked_fill_(~bits, float("-inf"))


def _byte_table(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[256, 8] per byte value b and bit i: bool "bit set" (dtype=bool), or for a float dtype the
    additive mask 0.0 (bit set: allowed) / -inf (clear). One table per (device, dtype)."""
    table = _BYTE_BITS.get((device, dtype))
    if table is None:
        b = torch.arange(256, dtype=torch.int32, device=device)
        bits = ((b[:, None] >> torch.arange(8, dtype=torch.int32, device=device)) & 1).bool()
        table = _bits_as(bits, dtype)
        _BYTE_BITS[(device, dtype)] = table
    return table


def _expand_bytes(bitmask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int32 [R, W] -> [R, 32W] of `_byte_table(dtype)` entries, column t for token 32w + j.

    One lookup per byte unpacks 8 tokens: on CPU ~10x faster than 32 shifts followed by a
    masked_fill (which alone costs ~12 ns per element there), and the float form lets the caller
    mask with a plain add. Little-endian: byte j of word w holds tokens 32w + 8j .. 32w + 8j + 7,
    lowest bit first; elsewhere the shift form is used."""
    r, w = bitmask.shape
    if sys.byteorder != "little":
        shifts = torch.arange(BITS_PER_WORD, device=bitmask.device, dtype=torch.int32)
        # Arithmetic right shift of negative words is fine: we only keep bit 0 after the shift.
        return _bits_as(((bitmask.unsqueeze(-1) >> shifts) & 1).bool().view(r, w * BITS_PER_WORD), dtype)
    byte_ids = bitmask.contiguous().view(torch.uint8).reshape(-1).to(torch.int64)  # [R * 4W]
    return _byte_table(bitmask.device, dtype).index_select(0, byte_ids).view(r, w * BITS_PER_WORD)


def unpack_bitmask(bitmask: torch.Tensor, num_cols: int) -> torch.Tensor:
    """int32 [R, W] -> bool [R, num_cols] (True = allowed); columns past 32*W are False."""
    r, w = bitmask.shape
    bits = _expand_bytes(bitmask, torch.bool)
    if num_cols <= w * BITS_PER_WORD:
        return bits[:, :num_cols]
    out = torch.zeros(r, num_cols, dtype=torch.bool, device=bitmask.device)
    out[:, : w * BITS_PER_WORD] = bits
    return out


def _check(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    if logits.dim() != 2 or bitmask.dim() != 2:
        raise ValueError(f"logits and bitmask must be 2-D, got {tuple(logits.shape)} and {tuple(bitmask.shape)}")
    if bitmask.dtype != torch.int32:
        raise ValueError(f"bitmask must be int32, got {bitmask.dtype}")
    if bitmask.shape[0] != logits.shape[0]:
        raise ValueError(f"bitmask rows ({bitmask.shape[0]}) must match logits rows ({logits.shape[0]})")


def _as_index_tensor(indices: Indices, device: torch.device) -> torch.Tensor | None:
    if indices is None:
        return None
    if isinstance(indices, torch.Tensor):
        return indices.to(device=device, dtype=torch.long)
    return torch.tensor(list(indices), dtype=torch.long, device=device)


def apply_token_bitmask_torch(logits: torch.Tensor, bitmask: torch.Tensor, vocab_size: int | None = None,
                              indices: Indices = None) -> torch.Tensor:
    """Reference implementation. logits float [B, V_padded] (modified in place and returned),
    bitmask int32 [B, W]; `indices`: rows to apply to (None: all)."""
    _check(logits, bitmask)
    bitmask = bitmask.to(logits.device, non_blocking=True)
    v_padded = logits.shape[1]
    idx = _as_index_tensor(indices, logits.device)
    if idx is not None and idx.numel() == 0:
        return logits
    rows_mask = bitmask if idx is None else bitmask[idx]  # [R, W]
    covered = min(v_padded, rows_mask.shape[1] * BITS_PER_WORD, vocab_size if vocab_size is not None else v_padded)
    bias = _expand_bytes(rows_mask, logits.dtype)[:, :covered]  # [R, covered]: 0 allowed, -inf not
    rows = logits if idx is None else logits.index_select(0, idx)
    rows[:, :covered].add_(bias)  # x + 0 = x exactly, x - inf = -inf
    rows[:, covered:] = float("-inf")  # past the tokenizer's vocab or the bitmask's coverage
    if idx is not None:
        logits.index_copy_(0, idx, rows)
    return logits


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, vocab_size: int | None = None,
                        indices: Indices = None) -> torch.Tensor:
    """Mask disallowed tokens to -inf in place (see the module docstring). Triton on CUDA, torch elsewhere."""
    if logits.is_cuda and triton_bitmask.HAVE_TRITON:
        _check(logits, bitmask)
        return triton_bitmask.apply_token_bitmask_triton(logits, bitmask, vocab_size, indices)
    return apply_token_bitmask_torch(logits, bitmask, vocab_size, indices)
