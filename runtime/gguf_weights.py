"""Read a GGUF's quantized linear-layer tensors as kernel records (`arborlm.kernels.quant`), blocks
converted directly, without a round trip through floats.

Block formats (ggml, 32 weights per block, `d` and `m` float16):
    Q4_1  d, m, 16 bytes of nibbles: w = d * q + m        -> Int4Groups(scale=d, minimum=m), exact
    Q4_0  d, 16 bytes of nibbles:    w = d * (q - 8)      -> Int4Groups(scale=d, minimum=-8d), exact
Nibble j of a block's byte i: i < 16 holds element i in its low nibble and element i + 16 in its high.
The records hold d and m in float32, exactly; the int4 kernel then keeps each group's (scale, zero)
in the activation dtype, so in bfloat16 d and m + 8d are rounded to 8 significant bits there (fp16
had 11): relative error up to 2^-9 per group scale; in float32 the kernel's weights are exact.
Other types (Q8_0 has one scale per 32 weights, which the per-row int8 kernel cannot hold; K-quants,
floats) are not converted: those layers are quantized from their dequantized weights instead.

llama.cpp stores q_proj / k_proj rows permuted for its RoPE layout; rows are reordered back here
(the inverse of its converter's permutation, as transformers' GGUF loader does for floats).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from arborlm.kernels.quant import Int4Groups

BLOCK = 32
# GGUF tensor-name suffix -> HF weight-name suffix, for the linear layers of a Llama block
GGUF_TO_HF = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_NAME = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """qs uint8 [N, B, 16] -> q uint8 [N, B * 32] in element order."""
    lo, hi = qs & 0x0F, qs >> 4
    return np.concatenate([lo, hi], axis=2).reshape(qs.shape[0], -1)


def _q4_1(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    blocks = raw.reshape(raw.shape[0], -1, 20)  # [N, B, 20]: d, m (fp16), 16 bytes
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    return _nibbles(blocks[..., 4:]), d, m


def _q4_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    blocks = raw.reshape(raw.shape[0], -1, 18)  # [N, B, 18]: d (fp16), 16 bytes
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    return _nibbles(blocks[..., 2:]), d, -8.0 * d


BLOCK_READERS = {"Q4_1": _q4_1, "Q4_0": _q4_0}


def unpermute_rows(num_rows: int, num_heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's q/k permutation (heads of [2, D/2] -> [D/2, 2] interleave)."""
    idx = torch.arange(num_rows)
    return idx.view(num_heads, num_rows // num_heads // 2, 2).transpose(1, 2).reshape(num_rows)


def read_gguf_int4(path: str, hf_config: Any) -> dict[str, Int4Groups]:
    """HF weight name (e.g. `model.layers.0.mlp.up_proj.weight`) -> Int4Groups, for every linear
    tensor of a type in BLOCK_READERS."""
    import gguf

    reader = gguf.GGUFReader(path)
    num_heads = hf_config.num_attention_heads
    num_kv_heads = getattr(hf_config, "num_key_value_heads", None) or num_heads
    out: dict[str, Int4Groups] = {}
    for t in reader.tensors:
        match = _NAME.match(t.name)
        kind = t.tensor_type.name
        if match is None or match.group(2) not in GGUF_TO_HF or kind not in BLOCK_READERS:
            continue
        q, d, m = BLOCK_READERS[kind](np.asarray(t.data))
        rec = Int4Groups(torch.from_numpy(q), torch.from_numpy(d), torch.from_numpy(m), BLOCK)
        part = match.group(2)
        if part in ("attn_q", "attn_k"):
            order = unpermute_rows(rec.shape[0], num_heads if part == "attn_q" else num_kv_heads)
            rec = Int4Groups(rec.q[order], rec.scale[order], rec.minimum[order], BLOCK)
        out[f"model.layers.{match.group(1)}.{GGUF_TO_HF[part]}.weight"] = rec
    return out
