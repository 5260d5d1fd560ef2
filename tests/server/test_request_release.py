"""Routes release what they started, without processes: the TokenizerManager's socket to the
scheduler is a recorder, outputs are fed by hand. Covers batch rejection before anything is sent
(rid collisions), aborting what was sent when a later submission fails, send errors surfacing, and
aborting on every disconnect path of a stream (before its first byte, or while it is waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import zmq
from fastapi import Request

from arborlm.runtime.server import native_api, openai_api
from arborlm.runtime.server.io_struct import AbortReq, IpcNames, TextOutput, TokenizedRequest
from arborlm.runtime.server.protocol import ApiError, CompletionRequest, GenerateRequest
from arborlm.runtime.server.tokenizer_manager import SubmitJob, TokenizerManager
from arborlm.runtime.types import FinishReason, SamplingParams


class RecordingSocket:
    """Stands in for the zmq.asyncio PUSH socket: records each message when it is sent and returns
    an awaitable, failing the sends whose (0-based) number is in `fail_at` (as zmq would)."""

    def __init__(self, fail_at: tuple[int, ...] = ()) -> None:
        self.sent: list[Any] = []
        self.fail_at = fail_at
        self.num_attempts = 0

    def send_pyobj(self, obj: Any, **_: Any) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.num_attempts += 1
        if self.num_attempts - 1 in self.fail_at:
            fut.set_exception(zmq.ZMQError(zmq.EAGAIN, "the scheduler's queue is full"))
        else:
            self.sent.append(obj)
            fut.set_result(None)
        return fut

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.sent if isinstance(m, kind)]


def make_tm(tokenizer: Any, sock: RecordingSocket) -> TokenizerManager:
    ipc = IpcNames("unused", "ipc://unused", "ipc://unused", "ipc://unused", "ipc://unused")
    tm = TokenizerManager(tokenizer, ipc, max_context_len=2048, vocab_size=len(tokenizer))
    tm.to_sched = sock  # type: ignore[assignment]
    return tm


SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}


def http_request(gone: asyncio.Event) -> tuple[Request, Callable[[], Awaitable[dict[str, Any]]]]:
    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    return Request(SCOPE, receive), receive


async def wait_sent(sock: RecordingSocket, kind: type, n: int = 1) -> list[Any]:
    for _ in range(200):
        if len(sock.of(kind)) >= n:
            return sock.of(kind)
        await asyncio.sleep(0.005)
    raise AssertionError(f"no {kind.__name__} sent: {sock.sent}")


def test_duplicate_rids_in_a_batch_send_nothing(tokenizer) -> None:
    async def scenario() -> None:
        sock = RecordingSocket()
        tm = make_tm(tokenizer, sock)
        gone = asyncio.Event()
        body = GenerateRequest(text=["a", "b"], rid=["dup", "dup"], sampling_params={"max_new_tokens": 1000})
        with pytest.raises(ApiError) as e:
            await native_api.generate(http_request(gone)[0], body, tm)
        assert e.value.status == 400 and e.value.param == "rid" and "dup" in e.value.message
        assert sock.sent == [] and tm.states == {}
        # A rid that collides with one already running rejects the batch too, before the new one goes.
        running = await tm.submit([1, 2], SamplingParams(), False, "busy")
        body = GenerateRequest(text=["a", "b"], rid=["fresh", "busy"])
        with pytest.raises(ApiError, match="already in use"):
            await native_api.generate(http_request(gone)[0], body, tm)
        assert [m.rid for m in sock.of(TokenizedRequest)] == ["busy"] and set(tm.states) == {running.rid}

    asyncio.run(scenario())


def test_failed_submission_aborts_what_was_sent(tokenizer) -> None:
    async def scenario() -> None:
        sock = RecordingSocket(fail_at=(2,))  # the third request's send fails
        tm = make_tm(tokenizer, sock)
        jobs = [SubmitJob([1, 2, 3], SamplingParams(max_new_tokens=1000), f"r{i}") for i in range(4)]
        with pytest.raises(ApiError) as e:
            await tm.submit_all(jobs, stream=False)
        assert e.value.status == 503 and "queue is full" in e.value.message  # the send error surfaced
        assert [m.rid for m in sock.of(TokenizedRequest)] == ["r0", "r1"]
        assert sorted(m.rid for m in sock.of(AbortReq)) == ["r0", "r1"]
        assert "r2" not in tm.states and "r3" not in tm.states
        # The aborted rids are free again once the scheduler reports them finished.
        for rid in ("r0", "r1"):
            tm._on_output(TextOutput(rid, "", [], True, FinishReason("abort"), {}))
        assert tm.states == {}

    asyncio.run(scenario())


def test_abort_is_sent_once(tokenizer) -> None:
    async def scenario() -> None:
        sock = RecordingSocket()
        tm = make_tm(tokenizer, sock)
        await tm.submit([1, 2], SamplingParams(), False, "x")
        assert await tm.abort("x") and await tm.abort("x")
        assert len(sock.of(AbortReq)) == 1
        assert not await tm.abort("unknown")

    asyncio.run(scenario())


async def _native_stream(request: Request, tm: TokenizerManager) -> Any:
    body = GenerateRequest(text="hello", stream=True, sampling_params={"max_new_tokens": 500})
    return await native_api.generate(request, body, tm)


async def _openai_stream(request: Request, tm: TokenizerManager) -> Any:
    body = CompletionRequest(prompt="hello", stream=True, max_tokens=500)
    return await openai_api.completions(request, body, tm, "m")


ROUTES = {"native": _native_stream, "openai": _openai_stream}


def asgi_scope(spec_version: str) -> dict[str, Any]:
    return SCOPE | {"asgi": {"version": "3.0", "spec_version": spec_version}}


async def started_stream(route: str, tm: TokenizerManager, sock: RecordingSocket,
                         gone: asyncio.Event) -> tuple[Any, Any, str]:
    """Run the route until it answers 200 (after the request's first output): (response, receive, rid)."""
    request, receive = http_request(gone)
    task = asyncio.create_task(ROUTES[route](request, tm))
    (req,) = await wait_sent(sock, TokenizedRequest)
    tm._on_output(TextOutput(req.rid, "x", [300], False, None, {}))
    return await asyncio.wait_for(task, 5), receive, req.rid


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_disconnect_before_the_body_starts_aborts(tokenizer, route: str, spec_version: str) -> None:
    """The first output arrived (so the route answers 200), then the client is gone before the
    response's first byte: writing the headers is slow (2.3: the disconnect is noticed meanwhile)
    or fails (2.4: the server raises on a send to a closed connection). The request is aborted."""

    async def scenario() -> None:
        sock = RecordingSocket()
        tm = make_tm(tokenizer, sock)
        gone = asyncio.Event()
        response, receive, rid = await started_stream(route, tm, sock, gone)
        gone.set()

        async def send(message: dict[str, Any]) -> None:
            if spec_version == "2.4":
                raise OSError("client disconnected")
            await asyncio.sleep(0.05)

        await asyncio.wait_for(response(asgi_scope(spec_version), receive, send), 5)
        assert [m.rid for m in sock.of(AbortReq)] == [rid]

    asyncio.run(scenario())


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_disconnect_while_streaming_aborts_without_another_output(tokenizer, route: str,
                                                                   spec_version: str) -> None:
    """The client leaves mid-stream while no output is coming (e.g. the request waits for KV): the
    disconnect itself must end the stream and abort, not a later write."""

    async def scenario() -> None:
        sock = RecordingSocket()
        tm = make_tm(tokenizer, sock)
        gone = asyncio.Event()
        response, receive, rid = await started_stream(route, tm, sock, gone)
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message.get("body"):
                gone.set()  # the client reads the first chunk, then goes away

        await asyncio.wait_for(response(asgi_scope(spec_version), receive, send), 5)
        assert any(m.get("body") for m in sent)
        assert [m.rid for m in sock.of(AbortReq)] == [rid]

    asyncio.run(scenario())


def test_stream_that_finishes_sends_no_abort(tokenizer) -> None:
    async def scenario() -> None:
        sock = RecordingSocket()
        tm = make_tm(tokenizer, sock)
        gone = asyncio.Event()
        response, receive, rid = await started_stream("native", tm, sock, gone)
        tm._on_output(TextOutput(rid, "y", [301], True, FinishReason("length"), {}))
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await asyncio.wait_for(response(SCOPE, receive, send), 5)
        body = b"".join(m.get("body", b"") for m in sent).decode()
        assert body.endswith("data: [DONE]\n\n") and '"delta": "y"' in body
        assert sock.of(AbortReq) == []

    asyncio.run(scenario())


def test_error_while_streaming_propagates_and_aborts(tokenizer) -> None:
    from arborlm.runtime.server.streams import first_then_rest

    async def scenario() -> None:
        sock = RecordingSocket()
        tm = make_tm(tokenizer, sock)
        gone = asyncio.Event()
        request, receive = http_request(gone)
        (state,) = await tm.submit_all([SubmitJob([1, 2, 3], SamplingParams(max_new_tokens=100))], stream=True)
        tm._on_output(TextOutput(state.rid, "x", [300], False, None, {}))

        async def events(items):
            async for _ in items:
                yield "data: {}\n\n"
                raise RuntimeError("formatting bug")

        response = await first_then_rest(request, tm, [state], events)

        async def send(message: dict[str, Any]) -> None:
            pass

        with pytest.raises(RuntimeError, match="formatting bug"):  # itself, not an ExceptionGroup
            await asyncio.wait_for(response(asgi_scope("2.3"), receive, send), 5)
        assert [m.rid for m in sock.of(AbortReq)] == [state.rid]

    asyncio.run(scenario())
