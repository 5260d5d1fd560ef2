"""ModelRunner: turns a scheduler `Batch` into tensors, runs the model over the KV pool, returns logits.

The only place tensors are built per step. Contract (see `Batch` in types.py), for row i:
    ext = batch.extend_lens[i]; kv_len = len(req.slot_ids); start = kv_len - ext
    new tokens = req.fill_ids[start:kv_len] at positions start..kv_len-1, K/V written to
    req.slot_ids[start:] (the scheduler appended those slots before calling forward).
ReqToToken rule: an EXTEND batch writes each row's whole `req.slot_ids` into row `req.req_pool_idx`
(cheap, and right when a cached prefix's slots were just assigned or the row was reused); a DECODE
batch writes only the one new slot per row.

Prompt logprobs (filled here, because only here are the prompt positions' logits available):
for a row whose `req.params.logprob_start_len >= 0`, every new prompt position p with
p >= logprob_start_len and p + 1 < len(req.input_ids) gives the logprob of input_ids[p+1] under the
logits at p. They are stored so that `req.prompt_logprobs[j]` is the logprob of `input_ids[j]`:
index 0 is always None, and so is every j <= logprob_start_len (and any j whose position was never
computed here, e.g. served from the radix cache: the scheduler should match at most
logprob_start_len tokens of such a request). With `params.top_logprobs_num > 0`,
`req.prompt_top_logprobs[j]` holds the top (token id, logprob) pairs at the same index (None where
prompt_logprobs is None). Entries already present (a re-prefill after retraction) are kept, not
appended twice. The sampler owns output logprobs.
"""

from __future__ import annotations

import ctypes
import logging

import torch

from arborlm.kernels import native_cpu
from arborlm.kernels.attention import build_metadata
from arborlm.runtime.config import EngineConfig
from arborlm.runtime.kv_pool import KVPool, ReqToToken
from arborlm.runtime.model_loader import LoadedModel
from arborlm.runtime.models.llama import LlamaArgs, LlamaModel
from arborlm.runtime.types import Batch, ForwardMode, Req

logger = logging.getLogger(__name__)


class ModelRunner:
    def __init__(self, config: EngineConfig, loaded: LoadedModel) -> None:
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.config = config
        self.device = torch.device(config.device)
        self.dtype: torch.dtype = loaded.dtype
        self.hf_config = loaded.hf_config
        args = LlamaArgs.from_hf(loaded.hf_config)
        max_ctx = config.max_context_len or int(args.max_position_embeddings)
        if args.sliding_window:
            # Within the window, sliding-window attention equals full attention: cap the context there.
            max_ctx = min(max_ctx, int(args.sliding_window))
        self.max_context_len: int = max_ctx
        self.native = _native_kernels(config, self.device, self.dtype)  # None: the torch references
        if config.quantization is not None and self.device.type != "cpu":
            raise ValueError(f"quantization={config.quantization!r} runs on CPU only, not {self.device}")
        self.model = LlamaModel(loaded.hf_config, loaded.state_dict, max_ctx, self.device, native=self.native,
                                quantization=config.quantization, quantized=loaded.quantized)
        self.vocab_size: int = self.model.vocab_size
        self.num_slots: int = config.max_total_tokens + 1  # slot 0 is padding
        self.max_running_requests = config.max_running_requests
        self.kv_pool = KVPool(args.num_layers, self.num_slots, args.num_kv_heads, args.head_dim, self.dtype, self.device)
        self.req_to_token = ReqToToken(config.max_running_requests, max_ctx, self.device)

    @torch.inference_mode()
    def forward(self, batch: Batch) -> torch.Tensor:
        """float32 logits `[len(batch) + sum(batch.verify_lens), vocab]`: rows [0, n) at each row's
        last new token; then, row after row, the `verify_lens[i]` positions before row i's last."""
        n = len(batch)
        if n == 0:
            return torch.empty(0, self.vocab_size, dtype=torch.float32, device=self.device)
        decode = batch.mode is ForwardMode.DECODE
        ids: list[int] = []
        positions: list[int] = []
        out_slots: list[int] = []
        rows: list[int] = []
        prefix_lens: list[int] = []
        last_idx: list[int] = []  # packed index of each row's last new token
        lp_idx: list[int] = []  # packed indices whose logits prompt logprobs need
        lp_jobs: list[tuple[Req, int, int]] = []  # (req, first position p, count)
        verify_idx: list[int] = []  # packed indices of draft positions to verify
        verify_lens = batch.verify_lens or [0] * n
        t = 0
        for req, ext, num_verify in zip(batch.reqs, batch.extend_lens, verify_lens, strict=True):
            kv_len = len(req.slot_ids)
            start = kv_len - ext
            if ext < 1 or start < 0 or kv_len > req.seq_len:
                raise ValueError(f"request {req.rid}: extend_len={ext} does not fit slot_ids={kv_len}, seq_len={req.seq_len}")
            if decode and ext != 1:
                raise ValueError(f"request {req.rid}: DECODE batch row with extend_len={ext}")
            if kv_len > self.max_context_len:
                raise ValueError(f"request {req.rid}: {kv_len} tokens exceed max_context_len={self.max_context_len}")
            if req.req_pool_idx is None:
                raise ValueError(f"request {req.rid} has no req_pool_idx")
            ids.extend(_new_tokens(req, start, ext))
            positions.extend(range(start, kv_len))
            out_slots.extend(req.slot_ids[start:])
            rows.append(req.req_pool_idx)
            prefix_lens.append(start)
            last_idx.append(t + ext - 1)
            if num_verify:
                if num_verify >= ext:
                    raise ValueError(f"request {req.rid}: verify_len={num_verify} needs extend_len > it, got {ext}")
                verify_idx.extend(range(t + ext - 1 - num_verify, t + ext - 1))
            lsl = req.params.logprob_start_len
            if lsl >= 0:
                p0, p1 = max(start, lsl), min(kv_len, len(req.input_ids) - 1)
                if p1 > p0:
                    lp_idx.extend(range(t + p0 - start, t + p1 - start))
                    lp_jobs.append((req, p0, p1 - p0))
            if not decode or req.table_dirty:  # dirty: slot_ids changed below kv_len (cache_progress)
                self.req_to_token.write_row(req.req_pool_idx, req.slot_ids)
            t += ext
        if decode:
            self.req_to_token.write_cells(rows, positions, out_slots)

        dev = self.device
        out_slots_t = torch.tensor(out_slots, dtype=torch.int64, device=dev)
        meta = build_metadata(
            self.req_to_token.table, *_attention_rows(rows, prefix_lens, batch), out_slots_t, native=self.native
        )
        logits = self.model.forward(
            torch.tensor(ids, dtype=torch.int64, device=dev),
            torch.tensor(positions, dtype=torch.int64, device=dev),
            meta,
            self.kv_pool.k_buffers,
            self.kv_pool.v_buffers,
            torch.tensor(last_idx + verify_idx + lp_idx, dtype=torch.int64, device=dev),
        )  # [n + len(verify_idx) + len(lp_idx), vocab] float32
        n_out = n + len(verify_idx)
        if lp_jobs:
            _fill_prompt_logprobs(logits[n_out:], lp_jobs)
        return logits[:n_out]


def _native_kernels(config: EngineConfig, device: torch.device, dtype: torch.dtype) -> ctypes.CDLL | None:
    """The native CPU kernels per `config.kernel_backend`; "native" raises when they cannot run."""
    if config.kernel_backend == "torch":
        return None
    if not native_cpu.supports(device, dtype):
        if config.kernel_backend == "native":
            raise ValueError(f"kernel_backend='native' runs on CPU in {list(native_cpu.KIND)}, not {device} / {dtype}")
        return None
    lib = native_cpu.load(config.cache_dir)
    if lib is None:
        if config.kernel_backend == "native":
            raise RuntimeError(f"kernel_backend='native' is unavailable: {native_cpu.load_error()}")
        logger.warning("native CPU kernels unavailable, using the torch references: %s", native_cpu.load_error())
    return lib


# A draft row (jump-forward verification) of at most this many tokens attends as that many decode
# rows sharing one ReqToToken row (query i sees keys [0, start + i]): short rows then join the one
# batched decode attention, with the same kernel and rounding as plain decoding, instead of a
# per-row masked extend call (measured ~4x slower per row on CPU).
DRAFT_AS_DECODE_MAX = 64


def _attention_rows(rows: list[int], prefix_lens: list[int], batch: Batch) -> tuple[list[int], list[int], list[int]]:
    """(req_pool_idx, prefix_len, extend_len) per attention row, draft rows split into decode rows."""
    if not any(batch.verify_lens):
        return rows, prefix_lens, list(batch.extend_lens)
    out_rows: list[int] = []
    out_prefix: list[int] = []
    out_ext: list[int] = []
    for row, pre, ext, v in zip(rows, prefix_lens, batch.extend_lens, batch.verify_lens, strict=True):
        if v and ext <= DRAFT_AS_DECODE_MAX:
            out_rows += [row] * ext
            out_prefix += range(pre, pre + ext)
            out_ext += [1] * ext
        else:
            out_rows.append(row)
            out_prefix.append(pre)
            out_ext.append(ext)
    return out_rows, out_prefix, out_ext


def _new_tokens(req: Req, start: int, ext: int) -> list[int]:
    """req.fill_ids[start:start+ext] without concatenating input + output (+ draft) per step."""
    n_in = len(req.input_ids)
    if start >= n_in and start + ext <= n_in + len(req.output_ids):
        return req.output_ids[start - n_in : start - n_in + ext]
    if start + ext <= n_in:
        return req.input_ids[start : start + ext]
    return req.fill_ids[start : start + ext]


def _fill_prompt_logprobs(logits: torch.Tensor, jobs: list[tuple[Req, int, int]]) -> None:
    """logits `[sum(count), vocab]` float32 at prompt positions, job after job (see module docstring)."""
    logprobs = torch.log_softmax(logits, dim=-1)
    targets: list[int] = []
    for req, p0, cnt in jobs:
        targets.extend(req.input_ids[p0 + 1 : p0 + 1 + cnt])
    tgt = torch.tensor(targets, dtype=torch.int64, device=logits.device)
    picked = logprobs.gather(1, tgt[:, None])[:, 0].tolist()
    max_top = max(req.params.top_logprobs_num for req, _, _ in jobs)
    top_vals: list[list[float]] = []
    top_ids: list[list[int]] = []
    if max_top > 0:
        tv, ti = logprobs.topk(max_top, dim=-1)
        top_vals, top_ids = tv.tolist(), ti.tolist()
    off = 0
    for req, p0, cnt in jobs:
        k = req.params.top_logprobs_num
        for j in range(cnt):
            idx = p0 + 1 + j  # prompt_logprobs[idx] = logprob of input_ids[idx]
            if len(req.prompt_logprobs) < idx:
                pad = idx - len(req.prompt_logprobs)
                req.prompt_logprobs.extend([None] * pad)
            if k > 0 and len(req.prompt_top_logprobs) < idx:
                req.prompt_top_logprobs.extend([None] * (idx - len(req.prompt_top_logprobs)))
            if len(req.prompt_logprobs) == idx:
                req.prompt_logprobs.append(picked[off + j])
            if k > 0 and len(req.prompt_top_logprobs) == idx:
                req.prompt_top_logprobs.append(list(zip(top_ids[off + j][:k], top_vals[off + j][:k], strict=True)))
        off += cnt
