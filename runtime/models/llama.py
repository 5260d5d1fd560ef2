"""Our own forward for the Llama family (Llama 1-3, SmolLM, Mistral, Qwen2).

Flat on purpose: weights are plain tensors in per-layer dataclasses (no nn.Module call overhead per
layer), q/k/v projections are one fused matmul and gate/up another, RoPE is one cos/sin table
indexed by position and applied to q and k in one go. Attention goes only through
`arborlm.kernels.attention`, which also writes the new K/V into the pool.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from arborlm.kernels import native_cpu
from arborlm.kernels.attention import AttentionMetadata, attention
from arborlm.kernels.reduce import topk_rows

from .quant_linear import LinearFactory

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "llama3", "linear")


@dataclass
class LlamaArgs:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_type: str
    rope_params: dict[str, Any]
    max_position_embeddings: int
    tie_word_embeddings: bool
    sliding_window: int | None  # None: full attention

    @classmethod
    def from_hf(cls, cfg: Any) -> LlamaArgs:
        """Read a transformers config (v4 `rope_theta`/`rope_scaling` or v5 `rope_parameters`)."""
        model_type = getattr(cfg, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not supported; supported: {list(SUPPORTED_MODEL_TYPES)}")
        act = getattr(cfg, "hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"hidden_act {act!r} is not supported (only silu / SwiGLU)")
        rp = getattr(cfg, "rope_parameters", None)
        if not isinstance(rp, dict) or not rp:
            rp = dict(getattr(cfg, "rope_scaling", None) or {})
            rp.setdefault("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        rope_type = rp.get("rope_type", rp.get("type")) or "default"
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"rope_type {rope_type!r} is not supported; supported: {list(SUPPORTED_ROPE_TYPES)}")
        partial = rp.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0))
        if partial not in (None, 1.0):
            raise ValueError(f"partial_rotary_factor={partial} is not supported")
        num_heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // num_heads
        num_kv = getattr(cfg, "num_key_value_heads", None) or num_heads
        if num_heads % num_kv:
            raise ValueError(f"num_attention_heads={num_heads} is not a multiple of num_key_value_heads={num_kv}")
        sliding = getattr(cfg, "sliding_window", None)
        if model_type == "qwen2" and not getattr(cfg, "use_sliding_window", False):
            sliding = None
        if model_type == "llama":
            sliding = None
        return cls(
            model_type=model_type,
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_layers=cfg.num_hidden_layers,
            num_heads=num_heads,
            num_kv_heads=num_kv,
            head_dim=head_dim,
            rms_norm_eps=float(cfg.rms_norm_eps),
            rope_theta=float(rp.get("rope_theta", 10000.0)),
            rope_type=rope_type,
            rope_params=rp,
            max_position_embeddings=cfg.max_position_embeddings,
            tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
            sliding_window=sliding,
        )


def rope_inv_freq(args: LlamaArgs) -> torch.Tensor:
    """`[head_dim // 2]` float32 inverse frequencies, as transformers computes them."""
    dim = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    p = args.rope_params
    if args.rope_type == "linear":
        inv_freq = inv_freq / float(p["factor"])
    elif args.rope_type == "llama3":
        factor = float(p["factor"])
        low, high = float(p["low_freq_factor"]), float(p["high_freq_factor"])
        old_ctx = float(p["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


def can_prepack(dtype: torch.dtype, device: torch.device) -> bool:
    """oneDNN weight prepacking: fp32 anywhere on CPU, bf16 on CPUs with native bf16 support (fp16
    untested). fp32: at batch 32 on 2 cores the prepacked oneDNN matmuls reach 7.5-9 GB/s of weights
    against 5-7 for F.linear (MKL), ~30% faster; the sums are ordered differently (outputs differ by
    ~4e-6 relative), and greedy tokens still match transformers in the fp32 tests and the offline bench."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if dtype == torch.float32:
        return True
    if dtype != torch.bfloat16:
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (RuntimeError, AttributeError):
        return False


REFINE_TOP = 8  # logits per row recomputed in fp32 for bf16 models (see LlamaModel.__init__)


class Linear:
    """y = x @ w.T + b, w `[out, in]`.

    On CPU with bf16 weights, `F.linear` makes oneDNN reorder the weight into its blocked
    layout on every call: a full copy of the weight, which for lm_head is most of a decode step.
    `prepack` reorders once (the same op inductor's weight-pack pass uses); measured on AMX: decode
    matmuls ~1.7x, lm_head at batch 32 ~2-3x faster, prefill unchanged, results bit-identical.
    fp32 weights are prepacked too (oneDNN instead of MKL; see `can_prepack`).
    """

    def __init__(self, w: torch.Tensor, b: torch.Tensor | None, prepack: bool) -> None:
        self.out_features = int(w.shape[0])
        self.b = b
        self.w: torch.Tensor | None = w
        self.packed: torch.Tensor | None = None
        if prepack:
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(w, 32)  # batch-size hint: barely matters
                self.w = None  # the packed copy replaces it (the caller may still hold w)
            except (RuntimeError, AttributeError):  # no oneDNN for this dtype/build: plain path
                self.packed = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.b, "none", [], "")
        assert self.w is not None
        return F.linear(x, self.w, self.b)


class TorchOps:
    """The layer's elementwise glue as torch ops: the reference for `NativeOps`, and the path for
    GPUs and dtypes the native kernels do not cover."""

    def add_rms_norm(self, h: torch.Tensor, delta: torch.Tensor | None, w: torch.Tensor, eps: float):
        """-> (h + delta, rms_norm(h + delta) * w); h `[T, hidden]`."""
        if delta is not None:
            h = h + delta
        return h, F.rms_norm(h, (h.shape[-1],), w, eps)

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        """`[T, 2I]` (gate | up) -> `[T, I]`."""
        inter = gate_up.shape[1] // 2
        return F.silu(gate_up[:, :inter]) * gate_up[:, inter:]

    def rope_tables(self, cos: torch.Tensor, sin_signed: torch.Tensor, positions: torch.Tensor) -> tuple:
        """Per forward: tables `[P, D]` at positions `[T]` -> what `rope` needs, for every layer."""
        return cos.index_select(0, positions).unsqueeze(1), sin_signed.index_select(0, positions).unsqueeze(1)

    def rope(self, qk: torch.Tensor, tables: tuple) -> torch.Tensor:
        """qk `[T, heads, D]` -> rotated `[T, heads, D]`: qk * cos + rotate_half(qk) * sin, where
        rotate_half(x) = roll(x, D/2) with its sign folded into sin_signed."""
        cos, sin = tables  # [T, 1, D] each
        return qk * cos + torch.roll(qk, qk.shape[-1] // 2, -1) * sin


class NativeOps(TorchOps):
    """The same glue as one fused C++ pass each (`kernels/native_cpu.cpp`; rounding as the torch ops)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib

    def add_rms_norm(self, h: torch.Tensor, delta: torch.Tensor | None, w: torch.Tensor, eps: float):
        x = native_cpu.add_rms_norm(self.lib, h, delta, w, eps)  # h += delta in place
        return h, x

    def silu_mul(self, gate_up: torch.Tensor) -> torch.Tensor:
        return native_cpu.silu_mul(self.lib, gate_up)

    def rope_tables(self, cos: torch.Tensor, sin_signed: torch.Tensor, positions: torch.Tensor) -> tuple:
        return cos, sin_signed, positions  # the kernel reads the full tables at the positions

    def rope(self, qk: torch.Tensor, tables: tuple) -> torch.Tensor:
        native_cpu.rope_(self.lib, qk, *tables)  # in place, on the qkv output
        return qk


LinearLike = Callable[[torch.Tensor], torch.Tensor]  # a `Linear` or a `kernels.quant.QuantLinear`


@dataclass
class LayerWeights:
    ln1: torch.Tensor  # [hidden]
    qkv: LinearLike  # [hidden] -> [(H + 2*Hkv) * D]
    o: LinearLike  # [H * D] -> [hidden]
    ln2: torch.Tensor
    gate_up: LinearLike  # [hidden] -> [2 * intermediate]
    down: LinearLike  # [intermediate] -> [hidden]


class LlamaModel:
    def __init__(
        self,
        hf_config: Any,
        state_dict: dict[str, torch.Tensor],
        max_context_len: int,
        device: torch.device | str = "cpu",
        prepack: bool | None = None,  # None: when can_prepack(dtype, device)
        native: ctypes.CDLL | None = None,  # the built native_cpu library: fused glue ops (CPU only)
        quantization: str | None = None,  # EngineConfig.quantization (models/quant_linear.py)
        quantized: dict[str, Any] | None = None,  # "gguf": HF weight name -> the file's block record
    ) -> None:
        self.args = a = LlamaArgs.from_hf(hf_config)
        self.device = torch.device(device)
        self.ops: TorchOps = NativeOps(native) if native is not None else TorchOps()
        sd = state_dict

        def get(name: str) -> torch.Tensor:
            if name not in sd:
                raise ValueError(f"weight {name!r} missing from the checkpoint ({a.model_type})")
            return sd[name].to(self.device)

        def opt(name: str) -> torch.Tensor | None:
            return sd[name].to(self.device) if name in sd else None

        def bias(names: list[str]) -> torch.Tensor | None:
            ts = [opt(n + ".bias") for n in names]
            if all(t is None for t in ts):
                return None
            if any(t is None for t in ts):
                raise ValueError(f"checkpoint has only some of {[n + '.bias' for n in names]}")
            return torch.cat(ts, dim=0).contiguous()  # type: ignore[arg-type]

        self.embed = get("model.embed_tokens.weight")  # [vocab, hidden]
        self.dtype = self.embed.dtype
        pack = can_prepack(self.dtype, self.device) if prepack is None else prepack
        lm_head = None if a.tie_word_embeddings else opt("lm_head.weight")
        head_w = self.embed if lm_head is None else lm_head
        self.norm = get("model.norm.weight")
        factory = LinearFactory(quantization, quantized or {}, self.dtype, lambda w, b: Linear(w, b, pack))
        self.lm_head = factory.head(head_w)  # [hidden] -> [vocab]
        # bf16 models: logits come from the fast bf16 matmul, then each row's top REFINE_TOP logits
        # are recomputed exactly in fp32 (fp32 final norm; the bf16 weights upcast exactly). bf16
        # logits have ~0.1 resolution at typical magnitudes, so greedy near-ties were decided by
        # rounding; a full fp32 lm_head fixes that too but costs ~4x the bf16 one (15 vs 3.5 ms per
        # batch-32 decode step on 2 cores), the refinement ~0.1 ms. A quantized lm_head is refined
        # the same way (in fp32 models too), from the unquantized head weight.
        self.logits_refine = self.dtype != torch.float32 or quantization is not None
        self.head_weight = head_w  # [vocab, hidden], unpacked (the embedding table when tied)
        self.final_norm_fp32 = self.norm.float()

        def linear(names: list[str]) -> LinearLike:
            return factory.build([n + ".weight" for n in names], get, bias(names))

        self.layers: list[LayerWeights] = []
        for i in range(a.num_layers):
            p = f"model.layers.{i}."
            self.layers.append(
                LayerWeights(
                    ln1=get(p + "input_layernorm.weight"),
                    qkv=linear([p + f"self_attn.{n}_proj" for n in ("q", "k", "v")]),
                    o=linear([p + "self_attn.o_proj"]),
                    ln2=get(p + "post_attention_layernorm.weight"),
                    gate_up=linear([p + f"mlp.{n}_proj" for n in ("gate", "up")]),
                    down=linear([p + "mlp.down_proj"]),
                )
            )
        self.vocab_size = self.lm_head.out_features
        self.scale = a.head_dim**-0.5
        # RoPE tables `[max_context_len, head_dim]` in the model dtype (transformers computes cos/sin
        # in fp32 and casts to the activation dtype). rotate_half(x) = roll(x, D/2) * [-1.., +1..],
        # so the sign is folded into sin once here.
        freqs = torch.outer(torch.arange(max_context_len, dtype=torch.float32), rope_inv_freq(a))
        emb = torch.cat([freqs, freqs], dim=-1)  # [P, D]
        half = a.head_dim // 2
        sign = torch.cat([-torch.ones(half), torch.ones(half)])
        self.cos = emb.cos().to(self.dtype).to(self.device)
        self.sin_signed = (emb.sin().to(self.dtype) * sign.to(self.dtype)).to(self.device)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        k_buffers: list[torch.Tensor],
        v_buffers: list[torch.Tensor],
        logits_idx: torch.Tensor | None,
    ) -> torch.Tensor:
        """input_ids, positions `[T]` int64 (packed rows); returns float32 logits `[len(logits_idx), vocab]`
        for the packed token indices in `logits_idx` only (lm_head is the biggest matmul); None = all T."""
        a = self.args
        t = input_ids.shape[0]
        nh, nkv, d = a.num_heads, a.num_kv_heads, a.head_dim
        q_end, k_end = nh * d, (nh + nkv) * d
        eps = a.rms_norm_eps
        hidden = (a.hidden_size,)
        ops = self.ops
        rope_tables = ops.rope_tables(self.cos, self.sin_signed, positions)
        h = F.embedding(input_ids, self.embed)  # [T, hidden]
        delta: torch.Tensor | None = None  # the residual branch not yet added to h
        for li, w in enumerate(self.layers):
            h, x = ops.add_rms_norm(h, delta, w.ln1, eps)
            qkv = w.qkv(x)  # [T, (H + 2Hkv) * D]
            qk = ops.rope(qkv[:, :k_end].view(t, nh + nkv, d), rope_tables)  # q and k at once
            v = qkv[:, k_end:].view(t, nkv, d)
            o = attention(qk[:, :nh], qk[:, nh:], v, k_buffers[li], v_buffers[li], meta, self.scale)
            h, x = ops.add_rms_norm(h, w.o(o.reshape(t, q_end)), w.ln2, eps)
            delta = w.down(ops.silu_mul(w.gate_up(x)))  # gate_up: [T, 2 * intermediate]
        if delta is not None:
            h = h + delta
        if logits_idx is not None:
            h = h.index_select(0, logits_idx)
        if not self.logits_refine:
            return self.lm_head(F.rms_norm(h, hidden, self.norm, eps)).float()
        hn = F.rms_norm(h.float(), hidden, self.final_norm_fp32, eps)  # [n, hidden] fp32
        logits = self.lm_head(hn.to(self.dtype)).float()  # [n, vocab]
        top = topk_rows(logits, REFINE_TOP)[1]  # [n, k]
        w = self.head_weight.index_select(0, top.reshape(-1)).view(*top.shape, -1).float()  # [n, k, hidden]
        return logits.scatter_(1, top, torch.einsum("nd,nkd->nk", hn, w))
