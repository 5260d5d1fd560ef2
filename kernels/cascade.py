"""Cascade attention for decode rows that share a prefix of KV slots (pure torch reference).

When many decode rows sit behind one long shared prefix (few-shot prompts served from the radix
cache: same slots for every row), the plain decode path gathers and attends to that prefix once
PER ROW per layer. Cascade splits each row's keys into
- the shared prefix `[0, P)`: gathered ONCE per layer as `[Hkv, P, D]` and attended by all rows'
  queries at once (the n rows' G query heads of one kv head become one query length of n*G, no
  mask: every row sees the whole prefix), and
- the row's own suffix `[P, len_i)`: a small padded batch `[n, Hkv, S, D]` with a key-padding mask,
and merges the two partial softmaxes exactly by their log-sum-exps:
    o = (o1 * e^lse1 + o2 * e^lse2) / (e^lse1 + e^lse2) = o2 + (o1 - o2) * sigmoid(lse1 - lse2).

Partial attentions with LSE: on CPU the fused flash kernel
`aten._scaled_dot_product_flash_attention_for_cpu` (fp32 accumulation and softmax, returns the LSE;
measured ~2.5x faster than a manual bf16/fp32 bmm-softmax for SmolLM2 shapes, and more accurate than
bf16 matmul scores); elsewhere (or with `USE_FLASH_CPU = False`) a manual fp32 softmax.
The merge runs in fp32; the result is returned in q's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# A cascade is used when >= 2 decode rows share at least this many leading KV slots.
# Tests/benchmarks may change it at run time (build_metadata reads it on every call).
CASCADE_MIN_PREFIX = 64
# Use the fused CPU flash kernel for the partial attentions when q is on CPU.
USE_FLASH_CPU = True


@dataclass
class CascadeMeta:
    """Decode rows `[n]` split into one shared prefix and per-row suffixes (built once per forward)."""

    shared_kv_idx: torch.Tensor  # [P] int64 slots of the prefix every decode row shares
    suffix_kv_idx: torch.Tensor  # [n * S] int64 slots of row i's tokens P..len_i-1, padding -> slot 0
    suffix_len: int  # S = max_len - P (>= 1: every row keeps at least its newest token here)
    suffix_mask: torch.Tensor | None  # [n, 1, 1, S] bool (True = attend); None = no padding
    _bias: dict[torch.dtype, torch.Tensor] = field(default_factory=dict)  # additive suffix mask per dtype

    @property
    def prefix_len(self) -> int:
        return int(self.shared_kv_idx.shape[0])

    def suffix_bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive form of `suffix_mask` (0 / -inf) in `dtype`, as the flash kernel wants; cached."""
        if self.suffix_mask is None:
            return None
        bias = self._bias.get(dtype)
        if bias is None:
            bias = torch.zeros(self.suffix_mask.shape, dtype=dtype, device=self.suffix_mask.device)
            bias.masked_fill_(~self.suffix_mask, float("-inf"))
            self._bias[dtype] = bias
        return bias


def find_cascade(
    idx: torch.Tensor, valid: torch.Tensor | None, min_len: int, min_prefix: int
) -> CascadeMeta | None:
    """idx `[n, max_len]` int64 decode slots (padding already -> 0), valid `[n, max_len]` bool or None
    (all rows full length), min_len = shortest row's length. Returns a cascade or None (plain path)."""
    n, max_len = idx.shape
    cap = min_len - 1  # every row keeps >= 1 token (its newest) in the suffix
    if n < 2 or cap < max(min_prefix, 1):
        return None
    # LCP of all rows = first column where any row differs from row 0 (same as min over rows of
    # `(idx == idx[0]).cumprod(1).sum(1)`); only the first `cap` columns matter.
    diff = (idx[1:, :cap] != idx[:1, :cap]).any(0)  # [cap]
    p = int(diff.to(torch.uint8).argmax()) if bool(diff.any()) else cap
    if p < max(min_prefix, 1):
        return None
    s = max_len - p
    suffix = idx[:, p:].reshape(-1)  # [n * S] (a copy: idx[:, p:] is not contiguous)
    mask = None if valid is None else valid[:, None, None, p:].contiguous()  # [n, 1, 1, S]
    return CascadeMeta(idx[0, :p].contiguous(), suffix, s, mask)


def cascade_decode(
    q: torch.Tensor, k_buffer: torch.Tensor, v_buffer: torch.Tensor, c: CascadeMeta, scale: float
) -> torch.Tensor:
    """q `[n, H, D]` (one query per decode row), buffers `[num_slots, Hkv, D]` -> `[n, H, D]` in q's dtype."""
    n, num_heads, head_dim = q.shape
    num_kv = k_buffer.shape[1]
    g = num_heads // num_kv  # query head h uses kv head h // g
    s = c.suffix_len
    qg = q.reshape(n, num_kv, g, head_dim)  # [n, Hkv, G, D]
    # --- shared prefix: one attention for all rows, queries stacked per kv head ---
    qp = qg.transpose(0, 1).reshape(1, num_kv, n * g, head_dim)  # [1, Hkv, n*G, D]
    kp = k_buffer.index_select(0, c.shared_kv_idx).transpose(0, 1).unsqueeze(0)  # [1, Hkv, P, D]
    vp = v_buffer.index_select(0, c.shared_kv_idx).transpose(0, 1).unsqueeze(0)
    o1, lse1 = attention_lse(qp, kp, vp, None, None, scale)  # [1, Hkv, n*G, D], [1, Hkv, n*G]
    o1 = o1.view(num_kv, n, g, head_dim).transpose(0, 1)  # [n, Hkv, G, D]
    lse1 = lse1.view(num_kv, n, g).transpose(0, 1)  # [n, Hkv, G]
    # --- each row's own suffix: padded batch with a key-padding mask ---
    ks = (
        k_buffer.index_select(0, c.suffix_kv_idx).view(n, s, num_kv, head_dim).transpose(1, 2)
    )  # [n, Hkv, S, D]
    vs = v_buffer.index_select(0, c.suffix_kv_idx).view(n, s, num_kv, head_dim).transpose(1, 2)
    o2, lse2 = attention_lse(
        qg, ks, vs, c.suffix_mask, c.suffix_bias(q.dtype), scale
    )  # [n, Hkv, G, D], [n, Hkv, G]
    # --- exact merge in fp32: weight of the prefix part = e^lse1 / (e^lse1 + e^lse2) ---
    w1 = torch.sigmoid(lse1.float() - lse2.float()).unsqueeze(-1)  # [n, Hkv, G, 1]
    o2f = o2.float()
    o = torch.addcmul(o2f, o1.float() - o2f, w1)  # [n, Hkv, G, D]
    return o.to(q.dtype).reshape(n, num_heads, head_dim)


def attention_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    bias: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-causal attention q `[B, Hkv, L, D]` over k/v `[B, Hkv, S, D]` (same head count: GQA is
    already folded into L). mask `[B, 1, 1, S]` bool or None, bias = the same as an additive mask in
    q's dtype. Returns (o `[B, Hkv, L, D]` in q's dtype, lse `[B, Hkv, L]` fp32). Every query must see
    >= 1 key."""
    if USE_FLASH_CPU and q.device.type == "cpu":
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, attn_mask=bias, scale=scale
        )
        return o, lse
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # [B, Hkv, L, S] fp32
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [B, Hkv, L]
    o = torch.matmul(torch.exp(scores - lse.unsqueeze(-1)), v.float())  # [B, Hkv, L, D]
    return o.to(q.dtype), lse
