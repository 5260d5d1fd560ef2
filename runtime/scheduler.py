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
from arborlm.runtime.isolation import forward_isolated, sample_isolated
from arborlm.runtime.jump_forward import JumpForward
from arborlm.runtime.kv_manager import KVManager
from arborlm.runtime.policy import get_policy
from arborlm.runtime.radix_cache import make_cache
from arborlm.runtime.request_output import step_logprobs, usage_of
from arborlm.runtime.stop import StopChecker
from arborlm.runtime.types import Batch, FinishReason, ForwardMode, Req, ReqStatus, RequestError, StepOutput
from arborlm.runtime.validation import InvalidRequest, RequestLimits, validate_request

logger = logging.getLogger("arborlm.scheduler")

# Waiting requests whose prompt shares this many more tokens with a request admitted in the same
# round than the cache holds wait one round: the first one's prefill lands in the tree, then they hit.
IN_BATCH_PREFIX_MIN = 16
# Admission keeps this many free slots per running request for its next decode steps, so a new
# prefill does not immediately force retractions (a heuristic: progress does not depend on it).
DECODE_RESERVE_PER_REQ = 8


class Scheduler:
    """Progress guarantee (what `_build_batch` and `_admit` maintain):

    - `running` is in admission order (a readmitted request joins at the end); its first request,
      the head, is never retracted. Each step
      the head gets a row of at least one token (a decode, a prefill chunk, or its whole draft):
      when the pool is short, the newest running requests are retracted first. The head always
      fits once they are, because `add_request` rejects prompt + max_new_tokens > pool size.
    - Every step the head's computed length `kv_len` grows by at least one and never exceeds
      prompt + max_new_tokens, so the head finishes within len(prompt) + max_new_tokens steps of
      becoming head. A request behind it only stalls (keeping its KV) or is retracted.
    - With nothing running, the first waiting request in policy order is admitted unconditionally
      (the whole pool is free to it); otherwise admission keeps a reserve for the running
      requests' next decode steps, and a retracted request waits until the rest of its run fits.

    Bound: every step that starts with a request running or waiting (grammar compilation aside)
    makes its head progress, and a request is head at most once, so a workload takes at most
    sum(len(prompt) + max_new_tokens) such steps — `tests/runtime/test_scheduler_fuzz.py` checks
    this on random workloads (arrivals, aborts, tiny pools, chunking, drafts, with/without cache).
    """

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
        self.limits = RequestLimits(self.vocab_size, self.max_context_len, self.kv.num_slots - 1)
        self.jump_forward = JumpForward(config.jump_forward, sample_fn, tokenizer, self.max_context_len)
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
        """Load the model, runner, sampler and grammar compiler the config names (scheduler_factory.py)."""
        from arborlm.runtime.scheduler_factory import build_scheduler

        return build_scheduler(cls, config)

    # ---------------------------------------------------------------- requests in / out
    def add_request(self, req: Req) -> None:
        """Queue a request; raises `InvalidRequest` (a ValueError naming the parameter) if it is bad."""
        validate_request(req.input_ids, req.params, self.limits)
        if req.rid in self.requests:
            raise InvalidRequest(f"request id {req.rid!r} is already in use", param="rid")
        p = req.params
        self.requests[req.rid] = req
        if p.grammar is not None:
            if self.grammar_compiler is None:
                del self.requests[req.rid]
                raise InvalidRequest("constrained decoding (regex / json_schema / choices / ebnf) is not available")
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
            for part, logits in forward_isolated(self.runner, batch, self._fail):
                self._process(part, logits)
        outputs, self._outputs = self._outputs, []
        return outputs

    # ---------------------------------------------------------------- failure isolation
    # An exception while running, sampling or advancing one request finishes that request with a
    # server error (its K/V is dropped, not cached); the others go on (see isolation.py).
    def _guarded(self, req: Req, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:
            if not req.finished:
                self._fail(req, e)

    def _fail(self, req: Req, exc: BaseException) -> None:
        logger.error("request %s failed: %s: %s", req.rid, type(exc).__name__, exc, exc_info=exc)
        message = f"internal error while processing this request: {type(exc).__name__}: {exc}"
        self._finish(req, FinishReason("abort", message=message), keep_in_cache=False,
                     error=RequestError(message))

    def _poll_grammars(self) -> None:
        for req in [r for r in self.grammar_waiting if r.grammar_future.done()]:
            self.grammar_waiting.remove(req)
            try:
                compiled = req.grammar_future.result()
                req.grammar = compiled.matcher()
            except Exception as e:  # a compile error fails this request only
                self._finish(req, FinishReason("abort", message=str(e)),
                             error=RequestError(str(e), "invalid_request_error", 400))
                continue
            req.grammar_compile_ms = float(getattr(compiled, "compile_ms", 0.0))
            req.status = ReqStatus.WAITING
            self.waiting.append(req)

    def _build_batch(self) -> Batch | None:
        """Rows for this step; see the class docstring for the progress guarantee."""
        decode_rows: list[tuple[Req, int]] = []
        extend_rows: list[tuple[Req, int]] = []
        budget = max(self.config.max_prefill_tokens, 1)
        chunk = self.config.chunked_prefill_size or self.max_context_len
        queue = list(self.running)  # admission order: queue[0] is the head, never retracted
        available = self.kv.available()  # kept up to date below: each alloc of n takes exactly n
        k = 0
        while k < len(queue):
            req = queue[k]
            k += 1
            while available < 1 and len(queue) > k:
                self._retract(queue.pop())  # the newest running request that has no row yet
                available = self.kv.available()
            if available < 1:
                continue  # not the head (it always fits, see above): it waits a step, keeping its KV
            pending = req.num_pending
            if req.draft_ids and pending > available:
                req.draft_ids = []  # a draft is verified whole or not at all
                pending = req.num_pending
            if pending == 1:
                self.kv.alloc(req, 1)
                available -= 1
                decode_rows.append((req, 1))
                continue
            # prefill chunk, or a whole jump-forward draft (its logits are needed at every position)
            n = pending if req.draft_ids else min(pending, chunk, max(budget, 1), available)
            self.kv.alloc(req, n)
            available -= n
            extend_rows.append((req, n))
            budget -= n
        rows = decode_rows + extend_rows + self._admit(budget, chunk)
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
        defer_shared = self.kv.cache.enabled  # without a tree, waiting a round shares nothing
        for req in ordered:
            if budget <= 0 or self.kv.rows.num_free == 0:
                break
            self.kv.admit(req, max_match(req))
            if defer_shared and self._shares_with_round(req, round_ids):
                self.kv.release(req, keep_in_cache=False)
                continue
            n = min(req.num_pending, chunk, budget)
            if (self.running or admitted) and self.kv.available() < n + self._admission_reserve(req, len(admitted)):
                self.kv.release(req, keep_in_cache=False)
                break
            self.kv.alloc(req, n)  # fits: checked above, or nothing runs and the pool is all free
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

    def _admission_reserve(self, req: Req, num_admitted: int) -> int:
        """Slots a new admission must leave free beyond its first chunk: a few decode steps for every
        running request and itself. A retracted request also waits until the rest of its run fits,
        so it is not readmitted only to be retracted again."""
        reserve = DECODE_RESERVE_PER_REQ * (len(self.running) + num_admitted + 1)
        if req.num_retractions:
            reserve += len(req.input_ids) + req.params.max_new_tokens - req.kv_len
        return reserve

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
        req.draft_ids = []
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
        prompt_only = [i for i in plain if batch.reqs[i].params.max_new_tokens == 0]
        for i in prompt_only:  # the prompt is computed (cached, prompt logprobs); no token is sampled
            self._report(batch.reqs[i], [], FinishReason("length"))
        plain = [i for i in plain if i not in prompt_only]
        if plain:
            reqs = [batch.reqs[i] for i in plain]
            for req, tid, lp, top in sample_isolated(self.sample_fn, logits, plain, reqs, self._fail):
                self._guarded(req, self._accept_and_report, req, tid, lp, top)
        for i, off, v in drafts:
            self._guarded(batch.reqs[i], self._verify, batch.reqs[i], logits, [*range(off, off + v), i])

    def _verify(self, req: Req, logits: Any, rows: list[int]) -> None:
        """Accept the model's tokens along the request's draft (jump_forward.py): the matching prefix,
        then the model's own token; K/V past what was accepted is stale and dropped."""
        draft = self.jump_forward.take_draft(req)
        new_ids: list[int] = []
        finish = None
        for j, (tid, lp, top) in enumerate(self.jump_forward.verify_tokens(req, draft, logits, rows)):
            finish = self._accept(req, tid, lp, top)
            new_ids.append(tid)
            if j == len(draft) or tid != draft[j]:
                break
            req.jump_forward_tokens += 1
            if finish is not None:
                break
        self.kv.truncate(req, req.seq_len - 1)
        self._report(req, new_ids, finish)

    def _accept_and_report(self, req: Req, tid: int, logprob: float | None, top: Any) -> None:
        self._report(req, [tid], self._accept(req, tid, logprob, top))

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
            self.jump_forward.propose(req)
        lps, tops = step_logprobs(req, len(new_ids))
        out = StepOutput(req.rid, new_ids, finish is not None, finish, lps, tops)
        self._outputs.append(out)
        if finish is not None:
            self._finish(req, finish, emit=False)
            out.usage = usage_of(req)

    def _finish(self, req: Req, reason: FinishReason, emit: bool = True,
                error: RequestError | None = None, keep_in_cache: bool = True) -> None:
        req.finish_reason = reason
        req.finish_time = time.perf_counter()
        req.status = ReqStatus.FINISHED
        if req in self.running:
            self.running.remove(req)
        req.draft_ids = []
        self.kv.release(req, keep_in_cache=keep_in_cache)
        self.requests.pop(req.rid, None)
        if emit:
            self._outputs.append(StepOutput(req.rid, [], True, reason, usage=usage_of(req), error=error))

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
