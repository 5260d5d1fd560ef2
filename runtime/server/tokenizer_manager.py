"""TokenizerManager: the main process's side of the pipeline (asyncio).

Tokenizes and validates, sends TokenizedRequest to the scheduler, and routes the detokenizer's
text outputs to one asyncio queue per request id. Request state (text so far, ids, logprobs,
timings) is accumulated here as outputs arrive, so a route only reads its queue.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

from arborlm.runtime.server.io_struct import (
    AbortReq,
    BatchTextOutput,
    IpcNames,
    RpcReply,
    RpcReq,
    TextOutput,
    TokenizedRequest,
)
from arborlm.runtime.server.metrics import ServerMetrics
from arborlm.runtime.server.protocol import ApiError
from arborlm.runtime.types import FinishReason, RequestError, SamplingParams, Usage
from arborlm.runtime.validation import InvalidRequest, RequestLimits, validate_request

logger = logging.getLogger("arborlm.server")


@dataclass
class ReqState:
    rid: str
    input_ids: list[int]
    params: SamplingParams
    stream: bool
    created: float = field(default_factory=time.perf_counter)
    queue: asyncio.Queue[TextOutput] = field(default_factory=asyncio.Queue)
    text: str = ""
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finished: bool = False
    finish_reason: FinishReason | None = None
    usage: Usage | None = None  # from the finishing output
    first_output_time: float | None = None
    last_output_time: float | None = None
    abort_sent: bool = False


@dataclass
class SubmitJob:
    """One scheduler request a route wants to send (validated already)."""

    input_ids: list[int]
    params: SamplingParams
    rid: str | None = None


def state_usage(state: ReqState) -> Usage:
    """The request's usage; counted here when it finished without one (aborted, failed)."""
    if state.usage is not None:
        return state.usage
    return Usage(len(state.input_ids), 0, len(state.output_ids))


class TokenizerManager:
    def __init__(self, tokenizer: Any, ipc: IpcNames, max_context_len: int, vocab_size: int,
                 metrics: ServerMetrics | None = None, max_total_tokens: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.ipc = ipc
        self.max_context_len = max_context_len
        # One request's prompt + output must also fit the KV pool on its own.
        self.max_req_len = min(max_context_len, max_total_tokens or max_context_len)
        self.vocab_size = vocab_size
        self.limits = RequestLimits(vocab_size, max_context_len, self.max_req_len)
        self.metrics = metrics or ServerMetrics()
        self.states: dict[str, ReqState] = {}
        self.rpc_waiters: dict[int, asyncio.Future[RpcReply]] = {}
        self.call_ids = itertools.count(1)
        self.dead_reason: str | None = None  # set when a child process died: refuse new work
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle ----

    async def start(self) -> None:
        self.ctx = zmq.asyncio.Context()
        self.to_sched = self.ctx.socket(zmq.PUSH)
        self.to_sched.connect(self.ipc.scheduler_in)
        self.recv = self.ctx.socket(zmq.PULL)
        self.recv.bind(self.ipc.main_in)
        self._task = asyncio.create_task(self._recv_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.ctx.destroy(linger=0)

    def fail_all(self, reason: str) -> None:
        """A child died: finish every request with a 503-type error instead of hanging."""
        self.dead_reason = reason
        for rid in list(self.states):
            self._on_output(TextOutput(rid, "", [], True, FinishReason("abort", message=reason),
                                       error=RequestError(reason, "server_error", 503)))
        for fut in self.rpc_waiters.values():
            if not fut.done():
                fut.set_result(RpcReply(0, error=reason))

    # ---- tokenization and validation ----

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def check_ids(self, ids: Any, param: str) -> list[int]:
        if not ids:
            raise ApiError("the prompt is empty", param=param)
        if any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.vocab_size for t in ids):
            raise ApiError(f"{param} holds token ids outside [0, {self.vocab_size})", param=param)
        return list(ids)

    def default_max_tokens(self, input_ids: list[int]) -> int:
        return max(0, self.max_req_len - len(input_ids))

    def validate(self, input_ids: list[int], params: SamplingParams, names: dict[str, str] | None = None) -> None:
        """Raise ApiError (400) naming the field; `names` maps SamplingParams names to the API's."""
        try:
            validate_request(input_ids, params, self.limits)
        except InvalidRequest as e:
            param = (names or {}).get(e.param, e.param) if e.param else None
            raise ApiError(str(e), param=param) from None

    # ---- requests ----

    def check_rids(self, rids: list[str | None]) -> None:
        """Raise ApiError (400, param rid) if a given rid repeats in `rids` or is already running,
        so a batch is rejected before any of it is sent."""
        seen: set[str] = set()
        for rid in rids:
            if rid is None:
                continue
            if rid in seen:
                raise ApiError(f"request id {rid!r} appears twice in the batch", param="rid")
            if rid in self.states:
                raise ApiError(f"request id {rid!r} is already in use", param="rid")
            seen.add(rid)

    async def submit(self, input_ids: list[int], params: SamplingParams, stream: bool,
                     rid: str | None = None) -> ReqState:
        if self.dead_reason:
            raise ApiError(self.dead_reason, status=503, type="server_error")
        rid = rid or uuid.uuid4().hex
        self.check_rids([rid])
        state = ReqState(rid, input_ids, params, stream)
        self.states[rid] = state
        try:
            await self.to_sched.send_pyobj(TokenizedRequest(rid, input_ids, params, stream), copy=False)
        except BaseException as e:
            del self.states[rid]  # never reached the scheduler: nothing to abort
            if isinstance(e, zmq.ZMQError):
                raise ApiError(f"could not send the request to the scheduler: {e}", 503,
                               type="server_error") from None
            raise
        return state

    async def submit_all(self, jobs: list[SubmitJob], stream: bool) -> list[ReqState]:
        """Submit a route's requests all or nothing: rids are checked for the whole batch first,
        and if one submission fails the ones already sent are aborted before the error propagates."""
        self.check_rids([job.rid for job in jobs])
        states: list[ReqState] = []
        try:
            for job in jobs:
                states.append(await self.submit(job.input_ids, job.params, stream, job.rid))
        except BaseException:
            for state in states:
                await self.abort(state.rid)
            raise
        return states

    async def abort(self, rid: str) -> bool:
        """Ask the scheduler to stop `rid` (once); its finished output then frees the rid."""
        state = self.states.get(rid)
        if state is None or state.finished or self.dead_reason:
            return False
        if not state.abort_sent:
            state.abort_sent = True
            await self.to_sched.send_pyobj(AbortReq(rid))
        return True

    async def outputs(self, state: ReqState) -> AsyncIterator[TextOutput]:
        """The request's outputs until it finishes. Leaving early (client gone) aborts it."""
        try:
            while True:
                out = await state.queue.get()
                yield out
                if out.finished:
                    return
        finally:
            if not state.finished:
                await self.abort(state.rid)

    async def rpc(self, method: str, timeout: float = 30.0) -> Any:
        if self.dead_reason:
            raise ApiError(self.dead_reason, status=503, type="server_error")
        call_id = next(self.call_ids)
        fut: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        self.rpc_waiters[call_id] = fut
        try:
            await self.to_sched.send_pyobj(RpcReq(call_id, method))
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ApiError(f"the scheduler did not answer {method} in {timeout:.0f}s", 503, type="server_error") from None
        finally:
            self.rpc_waiters.pop(call_id, None)
        if reply.error:
            raise ApiError(reply.error, status=500 if not self.dead_reason else 503, type="server_error")
        return reply.result

    # ---- receiving ----

    async def _recv_loop(self) -> None:
        while True:
            msg = await self.recv.recv_pyobj()
            try:
                if isinstance(msg, BatchTextOutput):
                    for out in msg.outputs:
                        self._on_output(out)
                elif isinstance(msg, RpcReply):
                    fut = self.rpc_waiters.get(msg.call_id)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
            except Exception:  # one bad message must not stop every request's delivery
                logger.exception("while handling %s", type(msg).__name__)

    def _on_output(self, out: TextOutput) -> None:
        state = self.states.get(out.rid)
        if state is None or state.finished:
            return
        now = time.perf_counter()
        state.output_ids.extend(out.new_token_ids)
        state.text += out.text
        state.logprobs.extend(out.logprobs)
        state.top_logprobs.extend(out.top_logprobs)
        if out.new_token_ids:
            m = self.metrics
            if state.first_output_time is None:
                state.first_output_time = now
                m.ttft.observe(now - state.created)
            elif state.last_output_time is not None:
                m.itl.observe(now - state.last_output_time)
            state.last_output_time = now
        if out.finished:
            state.finished = True
            state.finish_reason = out.finish_reason
            state.usage = out.usage
            del self.states[out.rid]
            self._log_finish(state, now)
        state.queue.put_nowait(out)

    def _log_finish(self, state: ReqState, now: float) -> None:
        usage, m = state_usage(state), self.metrics
        prompt, cached, completion = usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
        kind = state.finish_reason.kind if state.finish_reason else "unknown"
        m.prompt_tokens.inc(prompt)
        m.cached_tokens.inc(cached)
        m.generation_tokens.inc(completion)
        m.requests.labels(finish_reason=kind).inc()
        m.e2e.observe(now - state.created)
        logger.info("rid=%s prompt_tokens=%d cached_tokens=%d completion_tokens=%d finish=%s latency=%.3fs",
                    state.rid, prompt, cached, completion, kind, now - state.created)
