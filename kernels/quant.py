"""Weight-only quantized linear layers for CPU decode: int8 per output row, int4 per group.

Records (what a quantizer or a GGUF reader produces; plain tensors, concatenable along rows):
    Int8Rows    q int8 [N, K], scale float32 [N]:               w[n, k] = q[n, k] * scale[n]
    Int4Groups  q uint8 [N, K] in 0..15, scale/minimum float32 [N, K / group]:
                w[n, k] = q[n, k] * scale[n, g] + minimum[n, g], g = k // group
`dequantize(record)` is the float32 reference every kernel is tested against.

Kernels are torch's own CPU ops: `aten._weight_int8pack_mm` (bf16/fp32 activations, int8 weights,
one scale per row) and `aten._weight_int4pack_mm_for_cpu` (weights packed two per byte by
`_convert_weight_to_int4pack_for_cpu`, one (scale, zero) pair per group, w = (q - 8) * s + z; it
needs N a multiple of 16 and K a multiple of the group, so odd shapes are zero-padded at pack time
and the input is padded per call). They read 1 or 0.5 bytes per weight instead of 2, which is what
a batch-1 decode step is bound by; but they are poor at many rows (measured on 2 cores for the
SmolLM2 layer shapes, 30 layers of distinct weights: batch 1 int4 ~7-11 ms vs bf16 ~20 ms, batch 32
int8 ~220 ms and int4 ~80-500 ms vs bf16 ~95 ms). So a `QuantLinear` also keeps the dequantized
weight in the model dtype (prepacked for oneDNN like `Linear`) and uses it for steps of at least
`DENSE_ROWS_MIN` rows: the same (quantized) weights either way, the dense copy costs the bf16 memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

INT8_K_ALIGN = 64  # _weight_int8pack_mm: inputs padded to a multiple of this (see Int8Kernel)
INT4_N_ALIGN = 16  # _convert_weight_to_int4pack_for_cpu: N must be a multiple of this
INT4_GROUP_SIZES = (32, 64, 128, 256)
DEFAULT_INT4_GROUP = 32
# Steps with at least this many rows use the dense (dequantized) copy. Measured per kernel on the
# SmolLM2 shapes (see module docstring): int8pack/int4pack win at 1-4 rows, are even at ~8 and lose
# 2-5x at 32.
DENSE_ROWS_MIN = 8


@dataclass
class Int8Rows:
    q: torch.Tensor  # int8 [N, K]
    scale: torch.Tensor  # float32 [N]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.q.shape[0]), int(self.q.shape[1])


@dataclass
class Int4Groups:
    q: torch.Tensor  # uint8 [N, K], values 0..15
    scale: torch.Tensor  # float32 [N, ceil(K / group_size)]
    minimum: torch.Tensor  # float32 [N, ceil(K / group_size)]
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.q.shape[0]), int(self.q.shape[1])


QuantRecord = Int8Rows | Int4Groups


def quantize_int8(w: torch.Tensor) -> Int8Rows:
    """Symmetric per-row int8: scale = max|w| / 127 (rows of zeros get scale 1)."""
    wf = w.float()
    absmax = wf.abs().amax(dim=1)
    scale = torch.where(absmax > 0, absmax / 127.0, torch.ones_like(absmax))
    q = torch.round(wf / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return Int8Rows(q, scale)


def quantize_int4(w: torch.Tensor, group_size: int = DEFAULT_INT4_GROUP) -> Int4Groups:
    """Asymmetric int4 per group of `group_size` input columns (the last group may be short):
    minimum = min of the group, scale = (max - min) / 15."""
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"int4 group_size={group_size} is not one of {INT4_GROUP_SIZES}")
    n, k = w.shape
    num_groups = -(-k // group_size)
    wf = F.pad(w.float(), (0, num_groups * group_size - k)).view(n, num_groups, group_size)
    # padding columns must not widen a short last group's range: take min/max over the real columns
    valid = (torch.arange(num_groups * group_size) < k).view(1, num_groups, group_size)
    lo = torch.where(valid, wf, torch.inf).amin(dim=2)
    hi = torch.where(valid, wf, -torch.inf).amax(dim=2)
    scale = (hi - lo) / 15.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round((wf - lo[..., None]) / scale[..., None]).clamp_(0, 15).to(torch.uint8)
    return Int4Groups(q.view(n, -1)[:, :k].contiguous(), scale, lo, group_size)


def dequantize(rec: QuantRecord) -> torch.Tensor:
    """The float32 weight `[N, K]` a record stands for (the reference for every kernel)."""
    if isinstance(rec, Int8Rows):
        return rec.q.float() * rec.scale[:, None]
    k = rec.q.shape[1]
    scale = rec.scale.repeat_interleave(rec.group_size, dim=1)[:, :k]
    minimum = rec.minimum.repeat_interleave(rec.group_size, dim=1)[:, :k]
    return rec.q.float() * scale + minimum


def concat_rows(recs: list[QuantRecord]) -> QuantRecord:
    """Stack records of one kind (same K, same group) along N: fused q|k|v and gate|up weights."""
    first = recs[0]
    if isinstance(first, Int8Rows):
        if not all(isinstance(r, Int8Rows) for r in recs):
            raise ValueError("cannot concatenate int8 and int4 records")
        return Int8Rows(torch.cat([r.q for r in recs]), torch.cat([r.scale for r in recs]))  # type: ignore[union-attr]
    if not all(isinstance(r, Int4Groups) and r.group_size == first.group_size for r in recs):
        raise ValueError("int4 records to concatenate need the same kind and group size")
    return Int4Groups(torch.cat([r.q for r in recs]), torch.cat([r.scale for r in recs]),
                      torch.cat([r.minimum for r in recs]), first.group_size)  # type: ignore[union-attr]


class QuantKernel(Protocol):
    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class Int8Kernel:
    """`aten._weight_int8pack_mm`: x `[M, K]` (model dtype) -> `[M, N]`. In bf16 with K not a
    multiple of 32 it returned garbage or crashed (torch 2.13 CPU, K=100 and 577), so K is padded to
    INT8_K_ALIGN with zero weights (and the input per call)."""

    def __init__(self, rec: Int8Rows, dtype: torch.dtype) -> None:
        k = rec.shape[1]
        self.in_features = k
        self.k_pad = -(-k // INT8_K_ALIGN) * INT8_K_ALIGN
        self.q = F.pad(rec.q, (0, self.k_pad - k)).contiguous()
        self.scale = rec.scale.to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.k_pad != self.in_features:
            x = F.pad(x, (0, self.k_pad - self.in_features))
        return torch.ops.aten._weight_int8pack_mm(x.contiguous(), self.q, self.scale)


class Int4Kernel:
    """`aten._weight_int4pack_mm_for_cpu`: x `[M, K]` (model dtype) -> `[M, N]`; N padded to 16 and
    K to the group with zero weights (the padded input columns are zeros too)."""

    def __init__(self, rec: Int4Groups, dtype: torch.dtype) -> None:
        n, k = rec.shape
        g = rec.group_size
        self.out_features, self.in_features = n, k
        n_pad = -(-n // INT4_N_ALIGN) * INT4_N_ALIGN
        k_pad = rec.scale.shape[1] * g
        q = F.pad(rec.q.to(torch.int32), (0, k_pad - k, 0, n_pad - n))  # padded weights: q=0, s=z=0
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        scale = F.pad(rec.scale, (0, 0, 0, n_pad - n))
        zero = F.pad(rec.minimum + 8.0 * rec.scale, (0, 0, 0, n_pad - n))  # w = (q - 8) * s + z
        self.scale_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(dtype).contiguous()  # [G, Npad, 2]
        self.group_size = g
        self.k_pad = k_pad

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.k_pad != self.in_features:
            x = F.pad(x, (0, self.k_pad - self.in_features))
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.contiguous(), self.packed, self.group_size, self.scale_zeros)
        return y if y.shape[1] == self.out_features else y[:, : self.out_features].contiguous()


def make_kernel(rec: QuantRecord, dtype: torch.dtype) -> QuantKernel:
    if isinstance(rec, Int8Rows):
        return Int8Kernel(rec, dtype)
    return Int4Kernel(rec, dtype)


class QuantLinear:
    """y = x @ dequantize(rec).T + b: the quantized kernel below `dense_rows_min` rows, `dense` (a
    callable over the dequantized weight in the model dtype, e.g. a prepacked `Linear`) from there on;
    `dense=None` always uses the quantized kernel."""

    def __init__(self, rec: QuantRecord, b: torch.Tensor | None, dtype: torch.dtype,
                 dense: QuantKernel | None = None, dense_rows_min: int = DENSE_ROWS_MIN) -> None:
        self.out_features = rec.shape[0]
        self.kind = "int8" if isinstance(rec, Int8Rows) else "int4"
        self.kernel = make_kernel(rec, dtype)
        self.b = b
        self.dense = dense
        self.dense_rows_min = dense_rows_min

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None and x.shape[0] >= self.dense_rows_min:
            return self.dense(x)  # the dense callable adds its own bias
        y = self.kernel(x)
        return y if self.b is None else y + self.b
