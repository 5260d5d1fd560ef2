"""Waiting on a route's requests: merged outputs, first-output gating, disconnects, SSE framing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from arborlm.runtime.server.io_struct import TextOutput
from arborlm.runtime.server.protocol import ApiError
from arborlm.runtime.server.tokenizer_manager import ReqState, TokenizerManager

T = TypeVar("T")
DISCONNECT_POLL_S = 0.25


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def output_error(out: TextOutput) -> ApiError | None:
    """The error a finished output carries (grammar compile failure → 400, dead child → 503)."""
    err = out.error if out.finished else None
    if err is None:
        return None
    return ApiError(err.message, status=err.code, param=err.param, type=err.type)


class Merged:
    """(choice index, output) from several requests, in arrival order, until all finish.
    Closing it early aborts the requests still running (frees their KV)."""

    def __init__(self, tm: TokenizerManager, states: list[ReqState]) -> None:
        self.tm, self.states = tm, states
        self.queue: asyncio.Queue[tuple[int, TextOutput]] = asyncio.Queue()
        self.left = len(states)
        self.tasks = [asyncio.create_task(self._pump(tm, i, s)) for i, s in enumerate(states)]

    async def _pump(self, tm: TokenizerManager, i: int, state: ReqState) -> None:
        async for out in tm.outputs(state):  # its finally aborts the request if we are cancelled
            self.queue.put_nowait((i, out))

    def __aiter__(self) -> Merged:
        return self

    async def __anext__(self) -> tuple[int, TextOutput]:
        if self.left == 0:
            raise StopAsyncIteration
        item = await self.queue.get()
        if item[1].finished:
            self.left -= 1
        return item

    async def close(self) -> None:
        """Stop listening and abort every request not finished yet. Explicit, because a pump task
        cancelled before it first ran never enters `tm.outputs`, whose own cleanup would abort."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for state in self.states:
            if not state.finished:
                await self.tm.abort(state.rid)


class ReleasingStream(StreamingResponse):
    """An SSE response that releases its requests however it ends: finished, client gone before
    the first byte or mid-stream, or an error. Starlette may never start the body iterator (a
    disconnect noticed before the first chunk), so the cleanup cannot live in the iterator's
    `finally` alone. The client's disconnect is watched for the whole response, whatever ASGI
    spec version the server speaks."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(content, media_type="text/event-stream")
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        errors: list[Exception] = []  # raised after the task group, not wrapped in an ExceptionGroup
        try:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away while we sent
                        pass
                    except Exception as e:
                        errors.append(e)
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                await self.listen_for_disconnect(receive)
                tg.cancel_scope.cancel()
            if errors:
                raise errors[0]
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
                await self.on_close()


async def until_disconnect(request: Request, aw: Awaitable[T]) -> T:
    """Await `aw`, but give up (cancelling it) when the client goes away."""
    task = asyncio.ensure_future(aw)

    async def watch() -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ApiError("client disconnected", status=499)
    return task.result()


async def collect(request: Request, tm: TokenizerManager, states: list[ReqState]) -> None:
    """Wait for every request to finish (state accumulates in ReqState); raise the first error."""
    merged = Merged(tm, states)

    async def drain() -> None:
        async for _, out in merged:
            err = output_error(out)
            if err is not None:
                raise err

    try:
        await until_disconnect(request, drain())
    finally:
        await merged.close()


async def first_then_rest(
    request: Request, tm: TokenizerManager, states: list[ReqState],
    events: Callable[[AsyncIterator[tuple[int, TextOutput]]], AsyncIterator[str]],
) -> ReleasingStream:
    """Wait for the first output (a 400 is still possible until then), then stream SSE events.
    Every way out (error, disconnect before or during the body, the end) aborts what is running."""
    merged = Merged(tm, states)
    try:
        first = await until_disconnect(request, merged.__anext__())
    except BaseException:
        await merged.close()
        raise
    err = output_error(first[1])
    if err is not None:
        await merged.close()
        raise err

    async def items() -> AsyncIterator[tuple[int, TextOutput]]:
        yield first
        async for item in merged:
            yield item

    async def body() -> AsyncIterator[str]:
        try:
            async for ev in events(items()):
                yield ev
            yield "data: [DONE]\n\n"
        finally:
            await merged.close()

    return ReleasingStream(body(), merged.close)
