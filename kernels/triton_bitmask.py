"""Triton kernel for the grammar bitmask (layout: see `kernels/bitmask.py`).

triton is optional: this module imports without it and exposes `HAVE_TRITON`. The kernel is
jitted lazily on first use (not at import) so that `TRITON_INTERPRET=1`, which triton reads when
a function is decorated, can be set by a test after this module was imported; one jitted
version is kept per interpret setting.

Grid: (rows, ceil(V_padded / BLOCK)). Each program covers BLOCK columns of one row. It never
reads logits: it loads the bitmask word of each column and stores -inf only where the bit is
clear (or the column is past vocab_size / the bitmask's coverage), so allowed logits cost no
memory traffic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
    TRITON_IMPORT_ERROR: str | None = None
except Exception as e:  # ImportError, or a broken install (e.g. missing libcuda bits)
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    HAVE_TRITON = False
    TRITON_IMPORT_ERROR = f"{type(e).__name__}: {e}"

BLOCK = 1024

_jitted: dict[bool, Any] = {}


def _bitmask_kernel(logits_ptr, bitmask_ptr, indices_ptr, n_cols, limit, logits_stride, bitmask_stride,
                    HAS_INDICES: tl.constexpr, BLOCK: tl.constexpr):
    # logits_ptr: float [B, n_cols] (row stride logits_stride, unit column stride)
    # bitmask_ptr: int32 [B, W] (row stride bitmask_stride); limit = min(vocab_size, 32 * W)
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    if HAS_INDICES:
        row = tl.load(indices_ptr + pid_r).to(tl.int64)
    else:
        row = pid_r.to(tl.int64)
    cols = pid_c * BLOCK + tl.arange(0, BLOCK)
    in_range = cols < n_cols
    covered = cols < limit
    words = tl.load(bitmask_ptr + row * bitmask_stride + cols // 32, mask=covered, other=0)
    # Arithmetic shift of a negative word is fine: only bit 0 is kept.
    bits = (words >> (cols % 32)) & 1
    disallowed = in_range & (bits == 0)
    neg_inf = tl.full([BLOCK], float("-inf"), tl.float32)  # cast to the logits dtype by the store
    tl.store(logits_ptr + row * logits_stride + cols, neg_inf, mask=disallowed)


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _get_kernel() -> Callable[..., Any]:
    if not HAVE_TRITON:
        raise RuntimeError(f"triton is not available ({TRITON_IMPORT_ERROR})")
    mode = _interpret()
    if mode not in _jitted:
        _jitted[mode] = triton.jit(_bitmask_kernel)
    return _jitted[mode]


def apply_token_bitmask_triton(logits: torch.Tensor, bitmask: torch.Tensor, vocab_size: int | None = None,
                               indices: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as `bitmask.apply_token_bitmask_torch`: logits float [B, V_padded] masked in
    place, bitmask int32 [B, W] row-aligned, `indices` the rows to apply to (None: all)."""
    kernel = _get_kernel()
    if logits.stride(1) != 1:
        raise ValueError("logits must have unit column stride")
    bitmask = bitmask.to(logits.device, non_blocking=True)
    if bitmask.stride(1) != 1:
        bitmask = bitmask.contiguous()
    n_cols = logits.shape[1]
    limit = min(n_cols, bitmask.shape[1] * 32, vocab_size if vocab_size is not None else n_cols)
    if indices is None:
        n_rows, idx, has_idx = logits.shape[0], bitmask, False  # bitmask: unused placeholder pointer
    else:
        idx = (indices if isinstance(indices, torch.Tensor) else torch.tensor(list(indices), dtype=torch.int32))
        idx = idx.to(device=logits.device, dtype=torch.int32)
        n_rows, has_idx = idx.numel(), True
    if n_rows == 0 or n_cols == 0:
        return logits
    grid = (n_rows, triton.cdiv(n_cols, BLOCK))
    kernel[grid](logits, bitmask, idx, n_cols, limit, logits.stride(0), bitmask.stride(0),
                 HAS_INDICES=has_idx, BLOCK=BLOCK)
    return logits
