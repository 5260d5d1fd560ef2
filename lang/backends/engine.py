"""`al.Engine`: the in-process backend. One engine-loop thread owns the runtime's Scheduler.

Callers (program threads, pool threads, asyncio via executors) put jobs on a thread-safe queue and
wait on a future (or a stream queue). Each loop iteration drains the queue into the scheduler and
runs one `step()`, so concurrent programs share steps; nothing else touches the scheduler.
"""

from __future__ import annotations

import itertools
import queue
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from arborlm.backends.base import (
    Backend,
    BackendError,
    CallMeta,
    ChatTemplate,
    GenResult,
    HFChatTemplate,
    Messages,
    SelectResult,
)
from arborlm.select_scoring import (
    NEEDS_UNCONDITIONAL,
    SCORERS,
    split_choice_tokens,
    unconditional_start_id,
)


@dataclass
class StepNews:
    """What the backend needs from one scheduler `StepOutput` (see `read_step_output`)."""

    rid: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: Any  # the runtime's FinishReason
    meta: dict[str, Any]
    error: str | None


def read_step_output(out: Any) -> StepNews:
    """The one adapter from the runtime's StepOutput (keep runtime-format knowledge here)."""
    meta = out.usage.to_dict() if out.usage is not None else {}
    message = out.error.message if out.error is not None else None
    fr = out.finish_reason
    if fr is not None:
        meta["finish_reason"] = fr.kind
    if message is None and fr is not None and fr.kind == "abort":
        message = fr.message or "the request was aborted"
    return StepNews(out.rid, list(out.new_token_ids), bool(out.finished), fr, meta, message)


def call_meta(meta: dict[str, Any], ignore_output: bool = False) -> CallMeta:
    fr = meta.get("finish_reason")
    return CallMeta(
        prompt_tokens=int(meta.get("prompt_tokens", 0)), cached_tokens=int(meta.get("cached_tokens", 0)),
        completion_tokens=0 if ignore_output else int(meta.get("completion_tokens", 0)),
        finish_reason=fr.get("type") if isinstance(fr, dict) else fr,
        output_logprobs=meta.get("output_logprobs"),
    )


@dataclass(eq=False)
class _Control:
    """A function the loop thread runs between steps (flush the cache, run a raw-engine peer)."""

    fn: Any
    future: Future = field(default_factory=Future)


@dataclass(eq=False)
class _Job:
    req: Any  # runtime Req
    future: Future = field(default_factory=Future)
    deltas: queue.SimpleQueue | None = None  # stream: str deltas, then the GenResult / an exception
    detok: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


class Engine(Backend):
    def __init__(self, model: str = "smollm2", **options: Any) -> None:
        from arborlm.runtime.engine import Engine as RuntimeEngine

        self.runtime = RuntimeEngine(model, **options)
        self.scheduler = self.runtime.scheduler
        self.tokenizer = self.runtime.tokenizer
        self._template = HFChatTemplate(self.tokenizer)
        self._inbox: queue.SimpleQueue[list[_Job] | _Control | None] = queue.SimpleQueue()
        self._jobs: dict[str, _Job] = {}
        self._ids = itertools.count()
        self.num_steps = 0
        self.max_requests_per_step = 0  # most distinct requests one step reported on
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="arborlm-engine-loop", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the loop thread
    def _loop(self) -> None:
        while True:
            batches = [self._inbox.get()] if not self._jobs else []
            while True:
                try:
                    batches.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            if any(b is None for b in batches):
                self._fail_all(BackendError("the engine was closed"))
                return
            for item in batches:
                if isinstance(item, _Control):
                    self._control(item)
                else:
                    self._admit(item)  # type: ignore[arg-type]
            if not self._jobs:
                continue
            try:
                outs = self.scheduler.step()
            except Exception as e:  # a runtime failure fails the requests in flight, not the loop
                self._fail_all(BackendError(f"engine step failed: {e}"))
                continue
            self.num_steps += 1
            self.max_requests_per_step = max(self.max_requests_per_step, len({o.rid for o in outs}))
            for out in outs:
                self._deliver(read_step_output(out))

    @staticmethod
    def _control(item: _Control) -> None:
        try:
            item.future.set_result(item.fn())
        except Exception as e:
            item.future.set_exception(e)

    def _admit(self, jobs: list[_Job]) -> None:
        added: list[_Job] = []
        for job in jobs:
            try:
                self.scheduler.add_request(job.req)
            except Exception as e:
                for a in added:  # a group (select's requests) goes in whole or not at all
                    self.scheduler.abort_request(a.req.rid)
                    self._jobs.pop(a.req.rid, None)
                for j in jobs:
                    self._fail(j, BackendError(str(e)))
                return
            self._jobs[job.req.rid] = job
            added.append(job)

    def _deliver(self, news: StepNews) -> None:
        job = self._jobs.get(news.rid)
        if job is None:
            return
        if job.deltas is not None and job.detok is not None and news.error is None:
            delta = job.detok.add(news.new_token_ids)
            if news.finished:
                delta += job.detok.finish(news.finish_reason)
            if delta:
                job.deltas.put(delta)
        if not news.finished:
            return
        del self._jobs[news.rid]
        if news.error is not None:
            self._fail(job, BackendError(news.error))
            return
        job.meta = news.meta
        if job.req.params.return_logprob:  # per-step logprobs accumulate on the request itself
            job.meta["output_logprobs"] = list(job.req.output_logprobs)
        result = self._result(job)
        job.future.set_result(result)
        if job.deltas is not None:
            job.deltas.put(result)

    def _result(self, job: _Job) -> GenResult:
        from arborlm.runtime.detokenize import decode_stop_trimmed

        req = job.req
        if req.params.max_new_tokens == 0:  # a scoring / cache request: any output token is ignored
            return GenResult("", call_meta(job.meta, ignore_output=True))
        text = decode_stop_trimmed(self.tokenizer, req.output_ids, req.finish_reason, req.params.skip_special_tokens)
        return GenResult(text, call_meta(job.meta))

    @staticmethod
    def _fail(job: _Job, exc: BaseException) -> None:
        if not job.future.done():
            job.future.set_exception(exc)
        if job.deltas is not None:
            job.deltas.put(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for rid, job in list(self._jobs.items()):
            self.scheduler.abort_request(rid)
            self._fail(job, exc)
        self._jobs.clear()

    # ------------------------------------------------------------------ submitting
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _job(self, input_ids: list[int], params: dict[str, Any], stream: bool = False) -> _Job:
        from arborlm.runtime.detokenize import IncrementalDetokenizer
        from arborlm.runtime.types import Req, SamplingParams

        if self._closed:
            raise BackendError("the engine is closed")
        try:
            sp = SamplingParams.from_dict(params)
        except (TypeError, ValueError) as e:
            raise BackendError(str(e)) from None
        req = Req(f"lang-{next(self._ids)}-{uuid.uuid4().hex[:6]}", list(input_ids), sp)
        job = _Job(req)
        if stream:
            job.deltas = queue.SimpleQueue()
            job.detok = IncrementalDetokenizer(self.tokenizer, sp.skip_special_tokens, sp.stop,
                                               prompt_tail_ids=req.input_ids)
        return job

    def submit(self, jobs: list[_Job]) -> None:
        """Hand jobs to the loop; they enter the scheduler in the same iteration."""
        self._inbox.put(jobs)

    def generate(self, prompt: str, params: dict[str, Any], messages: Messages | None = None) -> GenResult:
        job = self._job(self.encode(prompt), params)
        self.submit([job])
        return job.future.result()

    def stream(self, prompt: str, params: dict[str, Any],
               messages: Messages | None = None) -> Iterator[str | GenResult]:
        job = self._job(self.encode(prompt), params, stream=True)
        self.submit([job])
        assert job.deltas is not None
        while True:
            item = job.deltas.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, GenResult):
                return

    def cache_prefix(self, prefix: str) -> CallMeta:
        job = self._job(self.encode(prefix), {"max_new_tokens": 0})
        self.submit([job])
        return job.future.result().meta

    def select(self, prefix: str, choices: list[str], method: str) -> SelectResult:
        toks = split_choice_tokens(self.encode, prefix, choices)
        start = toks.shared_len
        jobs = [self._job(ids, {"max_new_tokens": 0, "logprob_start_len": start - 1}) for ids in toks.full_ids]
        uncond_jobs = []
        if method in NEEDS_UNCONDITIONAL:
            bos = unconditional_start_id(self.tokenizer)
            uncond_jobs = [self._job([bos, *toks.choice_ids(i)], {"max_new_tokens": 0, "logprob_start_len": 0})
                           for i in range(len(choices))]
        self.submit(jobs + uncond_jobs)
        results = [j.future.result() for j in jobs + uncond_jobs]
        cond = [[float(x) for x in j.meta["prompt_logprobs"][start:]] for j in jobs]
        uncond = [[float(x) for x in j.meta["prompt_logprobs"][1:]] for j in uncond_jobs] or None
        index, scores = SCORERS[method](cond, uncond)
        meta = CallMeta(scores=scores, token_logprobs=cond, unconditional_logprobs=uncond)
        for r in results:
            meta.add(r.meta)
        return SelectResult(index, choices[index], meta)

    def chat_template(self) -> ChatTemplate:
        return self._template

    def run_in_loop(self, fn: Any) -> Any:
        """Run `fn()` on the engine-loop thread between steps (the only thread that touches the
        scheduler) and return its result."""
        if self._closed:  # no loop thread any more: nothing else touches the scheduler
            return fn()
        item = _Control(fn)
        self._inbox.put(item)
        return item.future.result()

    def flush_cache(self) -> bool:
        return bool(self.run_in_loop(self.scheduler.flush_cache))

    def stats(self) -> dict[str, Any]:
        return dict(self.run_in_loop(self.scheduler.stats)) | {"num_loop_steps": self.num_steps,
                                                "max_requests_per_step": self.max_requests_per_step}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
            self._thread.join(30)
            self.runtime.shutdown()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
