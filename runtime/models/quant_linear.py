"""Builds the model's linear layers per `EngineConfig.quantization` (records and kernels:
`arborlm.kernels.quant`).

    None    plain `Linear` in the model dtype
    "int8"  per-row int8 of the loaded weight (`quantize_int8`)
    "int4"  int4 per group of 32 input columns (`quantize_int4`)
    "gguf"  the GGUF's own Q4_0/Q4_1 blocks (`runtime/gguf_weights.py`); a layer whose GGUF tensor
            has another type falls back to "int8" of its loaded (dequantized) weight

Fused layers (q|k|v, gate|up) quantize each part on its own and stack the records, so "int8" and
"int4" give every original weight the same scales as quantizing it alone (and "gguf" can stack the
file's blocks). The embeddings stay in the model dtype. lm_head (`head`) is quantized per row
("int4": per group) for small steps, where its 28M weights are a third of a batch-1 step's bytes,
and kept unquantized for big steps; the model then recomputes each row's top logits exactly from the
unquantized weight (LlamaModel.logits_refine), so greedy picks among the quantized head's top few.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from arborlm.kernels.quant import (
    QuantLinear,
    QuantRecord,
    concat_rows,
    dequantize,
    quantize_int4,
    quantize_int8,
)

QUANTIZERS: dict[str, Callable[[torch.Tensor], QuantRecord]] = {
    "int8": quantize_int8,
    "int4": quantize_int4,
    "gguf": quantize_int8,  # only for layers the GGUF does not hold as Q4_0 / Q4_1
}
# lm_head per setting ("gguf": the file's Q8_0 table has one scale per 32 weights; per-row int8 here)
HEAD_QUANTIZERS: dict[str, Callable[[torch.Tensor], QuantRecord]] = {
    "int8": quantize_int8,
    "int4": quantize_int4,
    "gguf": quantize_int8,
}


class LinearFactory:
    """`build(weight_names, get_weight, bias)` -> a callable layer; `plain(w, b)` builds the
    unquantized `Linear` (passed in: models/llama.py owns it)."""

    def __init__(self, quantization: str | None, records: dict[str, QuantRecord], dtype: torch.dtype,
                 plain: Callable[[torch.Tensor, torch.Tensor | None], Callable[[torch.Tensor], torch.Tensor]],
                 keep_dense: bool = True) -> None:
        if quantization is not None and quantization not in QUANTIZERS:
            raise ValueError(f"quantization={quantization!r} is not one of {[None, *QUANTIZERS]}")
        self.quantization = quantization
        self.records = records
        self.dtype = dtype
        self.plain = plain
        self.keep_dense = keep_dense  # False: always the quantized kernel (no dense copy for big batches)

    def build(self, names: list[str], get_weight: Callable[[str], torch.Tensor],
              bias: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.quantization is None:
            return self.plain(torch.cat([get_weight(n) for n in names], dim=0).contiguous(), bias)
        quantize = QUANTIZERS[self.quantization]
        rec = concat_rows([self.records[n] if n in self.records else quantize(get_weight(n)) for n in names])
        dense = self.plain(dequantize(rec).to(self.dtype), bias) if self.keep_dense else None
        return QuantLinear(rec, bias, self.dtype, dense)

    def head(self, w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """lm_head `[vocab, hidden]`: quantized below DENSE_ROWS_MIN rows, `w` itself from there on."""
        if self.quantization is None:
            return self.plain(w, None)
        return QuantLinear(HEAD_QUANTIZERS[self.quantization](w), None, self.dtype, self.plain(w, None))
