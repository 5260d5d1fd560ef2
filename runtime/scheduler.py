"""Continuous-batching scheduler: the same `step()` runs in the offline Engine and the server.

Plain Python over `Req` objects (no torch import): the runner builds tensors, the sampler picks
tokens. One step (design.md §3):

    poll grammars → build a batch (decode rows first, then extends of running requests, then new
    admissions under the prefill budget) → runner.forward → sample → append / advance matcher /
    jump-forward / check stops → finished requests release their KV into the radix cache.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from arborlm.runtime.config import EngineConfig
from arborlm.runtime.jump_forward import SpeculativeJumpForward
from arborlm.runtime.kv_manager import KVManager
from arborlm.runtime.memory import OutOfSlots
from arborlm.runtime.policy import get_policy
from arborlm.runtime.radix_cache import make_cache
from arborlm.runtime.request_output import finished_meta, step_meta
from arborlm.runtime.stop import StopChecker
from arborlm.runtime.types import Batch, FinishReason, ForwardMode, Req, ReqStatus, StepOutput

logger = logging.getLogger("arborlm.scheduler")

# Waiting requests whose prompt shares this many more tokens with a request admitted in the same
# round than the cache holds wait one round: the first one's prefill lands in the tree, then they hit.
IN_BATCH_PREFIX_MIN = 16
# Admission keeps this many free slots per running request for its next decode steps, so a new
# prefill does not immediately force retractions.
DECODE_RESERVE_PER_REQ = 8


class Scheduler(SpeculativeJumpForward):
    def __init__(self, config: EngineConfig, runner: Any, sample_fn: Any, tokenizer: Any,
                 eos_token_ids: set[int], grammar_compiler: Any = None) -> None:
        self.config = config
        self.runner = runner
        self.sample_fn = sample_fn  # (logits, reqs) -> SampleResult; builds grammar bitmasks
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.grammar_compiler = grammar_compiler
        self.max_context_len: int = runner.max_context_len
        self.vocab_size: int = runner.vocab_size
        self.kv = KVManager(runner.num_slots, config.max_running_requests,
                            make_cache(config.disable_radix_cache))
        self.policy = get_policy(config.schedule_policy)
        self.stop = StopChecker(tokenizer, eos_token_ids, self.max_context_len)
        self.waiting: deque[Req] = deque()
        self.grammar_waiting: list[Req] = []
        self.running: list[Req] = []
        self.requests: dict[str, Req] = {}
        self._outputs: list[StepOutput] = []
        self.num_prompt_tokens = 0
        self.num_cached_tokens = 0
        self.num_generated_tokens = 0
        self.num_forward_passes = 0

    @classmethod
    def from_config(cls, config: EngineConfig) -> Scheduler:
        from arborlm.runtime.grammar_mask import GrammarSampler
        from arborlm.runtime.model_loader import eos_token_ids, load_model
        from arborlm.runtime.model_runner import ModelRunner

        loaded = load_model(config)
        config = config.replace(dtype=str(loaded.dtype).removeprefix("torch."))
        runner = ModelRunner(config, loaded)
        eos = eos_token_ids(loaded.hf_config, loaded.tokenizer)
        compiler = None
        try:
            from arborlm.constrain import GrammarCompiler
        except ImportError:  # constrained decoding not available: requests asking for it get an error
            GrammarCompiler = None  # noqa: N806
        if GrammarCompiler is not None:
            compiler = GrammarCompiler(loaded.tokenizer, num_threads=config.grammar_compile_threads,
                                       whitespace_pattern=config.json_whitespace, backend=config.grammar_backend,
                                       number_digits=config.json_number_digits)
        sample_fn = GrammarSampler(runner.vocab_size, eos, config.device)
        sched = cls(config, runner, sample_fn, loaded.tokenizer, eos, compiler)
        sched.model_path = loaded.path
        return sched

    # ---------------------------------------------------------------- requests in / out
    def add_request(self, req: Req) -> None:
        p = req.params
        p.validate(self.vocab_size)
        if req.rid in self.requests:
            raise ValueError(f"request id {req.rid!r} is already in use")
        n = len(req.input_ids)
        if n == 0:
            raise ValueError("the prompt is empty: give at least one token")
        if any(not 0 <= t < self.vocab_size for t in req.input_ids):
            raise ValueError(f"input_ids must be token ids in [0, {self.vocab_size})")
        if n + p.max_new_tokens > self.max_context_len:
            raise ValueError(f"prompt ({n} tokens) + max_new_tokens ({p.max_new_tokens}) = {n + p.max_new_tokens} "
                             f"exceeds the context length {self.max_context_len}")
        if n + p.max_new_tokens > self.kv.num_slots - 1:
            raise ValueError(f"prompt + max_new_tokens ({n + p.max_new_tokens}) exceeds the KV pool "
                             f"({self.kv.num_slots - 1} tokens): raise max_total_tokens")
        if p.logprob_start_len >= n:
            raise ValueError(f"logprob_start_len ({p.logprob_start_len}) must be < the prompt length ({n})")
        self.requests[req.rid] = req
        if p.grammar is not None:
            if self.grammar_compiler is None:
                del self.requests[req.rid]
                raise ValueError("constrained decoding (regex / json_schema / choices / ebnf) is not available")
            kind, spec = p.grammar
            req.grammar_future = self.grammar_compiler.compile(kind, spec, p.json_number_digits)
            req.status = ReqStatus.WAITING_GRAMMAR
            self.grammar_waiting.append(req)
        else:
            req.status = ReqStatus.WAITING
            self.waiting.append(req)

    def abort_request(self, rid: str, message: str = "aborted") -> bool:
        req = self.requests.get(rid)
        if req is None or req.finished:
            return False
        if req in self.waiting:
            self.waiting.remove(req)
        if req in self.grammar_waiting:
            self.grammar_waiting.remove(req)
        self._finish(req, FinishReason("abort", message=message))
        return True

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.grammar_waiting or self._outputs)

    # ---------------------------------------------------------------- the loop
    def step(self) -> list[StepOutput]:
        self._poll_grammars()
        batch = self._build_batch()
        if batch is not None:
            logits = self.runner.forward(batch)
            self._process(batch, logits)
        outputs, self._outputs = self._outputs, []
        return outputs

    def _poll_grammars(self) -> None:
        for req in [r for r in self.grammar_waiting if r.grammar_future.done()]:
            self.grammar_waiting.remove(req)
            try:
                compiled = req.grammar_future.result()
            except Exception as e:  # a compile error fails this request only
                self._finish(req, FinishReason("abort", message=str(e)),
                             error={"message": str(e), "type": "invalid_request_error", "code": 400})
                continue
            req.grammar = compiled.matcher()
            req.grammar_compile_ms = float(getattr(compiled, "compile_ms", 0.0))
            req.status = ReqStatus.WAITING
            self.waiting.append(req)

    def _build_batch(self) -> Batch | None:
        rows: list[tuple[Req, int]] = []
        # 1) decode rows (one pending token each); out of KV → retract the newest
        decoding = [r for r in self.running if r.num_pending == 1]
        while decoding and self.kv.available() < len(decoding):
            self._retract(decoding.pop(max(range(len(decoding)), key=lambda i: decoding[i].arrival_time)))
        for req in decoding:
            self.kv.alloc(req, 1)
            rows.append((req, 1))
        # 2) running requests with several pending tokens (prefill chunks, jump-forward)
        budget = self.config.max_prefill_tokens
        chunk = self.config.chunked_prefill_size or self.max_context_len
        for req in [r for r in self.running if r.num_pending > 1]:
            # a jump-forward draft is verified whole (its logits are needed at every position)
            n = req.num_pending if req.num_draft else min(req.num_pending, chunk, max(budget, 1))
            if self.kv.available() < n:
                self._retract(req)
                continue
            self.kv.alloc(req, n)
            rows.append((req, n))
            budget -= n
        # 3) new admissions
        rows += self._admit(budget, chunk)
        if not rows:
            return None
        reqs = [r for r, _ in rows]
        ext = [n for _, n in rows]
        mode = ForwardMode.DECODE if all(n == 1 for n in ext) else ForwardMode.EXTEND
        return Batch(reqs, ext, mode, [r.num_pending == 0 for r in reqs], [r.num_draft for r in reqs])

    def _admit(self, budget: int, chunk: int) -> list[tuple[Req, int]]:
        admitted: list[tuple[Req, int]] = []
        if not self.waiting or budget <= 0 or self.kv.rows.num_free == 0:
            return admitted  # nothing can be admitted: skip the policy's tree walk per waiting request

        def max_match(r: Req) -> int:
            m = r.seq_len - 1  # at least one token is computed, to get its logits
            return min(m, r.params.logprob_start_len) if r.params.logprob_start_len >= 0 else m

        ordered = self.policy(list(self.waiting), lambda r: self.kv.match_len(r.fill_ids[:max_match(r)]))
        round_ids: list[list[int]] = []
        for req in ordered:
            if budget <= 0 or self.kv.rows.num_free == 0:
                break
            self.kv.admit(req, max_match(req))
            if self._shares_with_round(req, round_ids):
                self.kv.release(req, keep_in_cache=False)
                continue
            n = min(req.num_pending, chunk, budget)
            reserve = DECODE_RESERVE_PER_REQ * (len(self.running) + len(admitted) + 1)
            if self.kv.available() < n + reserve and (self.running or admitted):
                self.kv.release(req, keep_in_cache=False)
                break
            try:
                self.kv.alloc(req, n)
            except OutOfSlots:
                self.kv.release(req, keep_in_cache=False)
                break
            self.waiting.remove(req)
            if req.status == ReqStatus.WAITING and req.num_retractions == 0 and not req.output_ids:
                req.cached_tokens = req.prefix_len
                self.num_prompt_tokens += len(req.input_ids)
                self.num_cached_tokens += req.prefix_len
            req.status = ReqStatus.RUNNING
            self.running.append(req)
            admitted.append((req, n))
            round_ids.append(req.fill_ids)
            budget -= n
        return admitted

    @staticmethod
    def _shares_with_round(req: Req, round_ids: list[list[int]]) -> bool:
        ids = req.fill_ids
        for other in round_ids:
            limit = min(len(ids), len(other))
            i = req.prefix_len
            while i < limit and ids[i] == other[i]:
                i += 1
            if i - req.prefix_len >= IN_BATCH_PREFIX_MIN:
                return True
        return False

    def _retract(self, req: Req) -> None:
        """Out of KV: send the request back to the queue's front. Its computed tokens go into the
        tree (evictable), so re-admission usually hits the cache; its outputs so far are kept."""
        logger.info("retracting %s (kv_len=%d) for lack of KV slots", req.rid, req.kv_len)
        self.running.remove(req)
        self._drop_draft(req)
        self.kv.release(req, keep_in_cache=True)
        req.status = ReqStatus.WAITING
        req.num_retractions += 1
        self.waiting.appendleft(req)

    # ---------------------------------------------------------------- after the forward
    def _process(self, batch: Batch, logits: Any) -> None:
        """logits: `[n + sum(verify_lens), V]` (see ModelRunner.forward)."""
        self.num_forward_passes += 1
        n = len(batch)
        for req, ext in zip(batch.reqs, batch.extend_lens):
            req.table_dirty = False
            req.num_forward_passes += 1
            if ext > 1 and not req.output_ids:  # prompt tokens: share them through the tree now
                self.kv.cache_progress(req)
        plain: list[int] = []
        drafts: list[tuple[int, int, int]] = []  # (batch row, first verify logits row, draft len)
        off = n
        for i, v in enumerate(batch.verify_lens or [0] * n):
            if v:
                drafts.append((i, off, v))
                off += v
            elif batch.sample_rows[i]:
                plain.append(i)
        if plain:
            reqs = [batch.reqs[i] for i in plain]
            result = self.sample_fn(logits[plain] if len(plain) < n else logits[:n], reqs)
            for j, req in enumerate(reqs):
                tid = int(result.next_token_ids[j])
                finish = self._accept(req, tid, result.logprobs[j] if result.logprobs else None,
                                      result.top_logprobs[j] if result.top_logprobs else None)
                self._report(req, [tid], finish)
        for i, off, v in drafts:
            self._verify(batch.reqs[i], logits, [*range(off, off + v), i])

    def _accept(self, req: Req, tid: int, logprob: float | None, top: Any) -> FinishReason | None:
        """Append one sampled token: output, logprobs, matcher, stop conditions."""
        req.output_ids.append(tid)
        self.num_generated_tokens += 1
        if req.params.return_logprob:
            req.output_logprobs.append(logprob)
            req.output_top_logprobs.append(top or [])
        if req.first_token_time is None:
            req.first_token_time = time.perf_counter()
        if req.grammar is not None and tid not in self.eos_token_ids:
            req.grammar.advance(tid)
        return self.stop.check(req, 1)

    def _report(self, req: Req, new_ids: list[int], finish: FinishReason | None) -> None:
        if finish is None:
            self._propose_draft(req)
        out = StepOutput(req.rid, new_ids, finish is not None, finish, step_meta(req, len(new_ids)))
        self._outputs.append(out)
        if finish is not None:
            self._finish(req, finish, emit=False)
            out.meta.update(finished_meta(req))

    def _finish(self, req: Req, reason: FinishReason, emit: bool = True,
                error: dict[str, Any] | None = None) -> None:
        req.finish_reason = reason
        req.finish_time = time.perf_counter()
        req.status = ReqStatus.FINISHED
        if req in self.running:
            self.running.remove(req)
        self._drop_draft(req)
        self.kv.release(req, keep_in_cache=True)
        self.requests.pop(req.rid, None)
        if emit:
            meta = finished_meta(req)
            if error is not None:
                meta["error"] = error
            self._outputs.append(StepOutput(req.rid, [], True, reason, meta))

    # ---------------------------------------------------------------- cache / stats
    def flush_cache(self) -> bool:
        if self.running or self.waiting or self.grammar_waiting:
            return False
        self.kv.flush()
        return True

    def check_invariants(self) -> None:
        self.kv.check_invariants(self.running)

    def stats(self) -> dict[str, Any]:
        cache = self.kv.cache
        used = self.kv.num_slots - 1 - self.kv.slots.num_free
        return {
            "num_running": len(self.running),
            "num_waiting": len(self.waiting) + len(self.grammar_waiting),
            "kv_total_tokens": self.kv.num_slots - 1,
            "kv_used_tokens": used,
            "free_slots": self.kv.slots.num_free,
            "tokens_in_tree": cache.total_size(),
            "evictable_tokens": cache.evictable_size(),
            "protected_tokens": cache.protected_size(),
            "num_prompt_tokens": self.num_prompt_tokens,
            "num_cached_tokens": self.num_cached_tokens,
            "cache_hit_rate": self.num_cached_tokens / max(1, self.num_prompt_tokens),
            "num_generated_tokens": self.num_generated_tokens,
            "num_forward_passes": self.num_forward_passes,
        }

    def model_info(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "model_path": getattr(self, "model_path", self.config.model),
            "dtype": self.config.dtype,
            "max_context_len": self.max_context_len,
            "vocab_size": self.vocab_size,
            "max_total_tokens": self.kv.num_slots - 1,
        }
