"""The FastAPI app: routes, OpenAI-style errors (400 instead of FastAPI's 422), bearer-key auth."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from arborlm.runtime.server import native_api, openai_api
from arborlm.runtime.server.protocol import (
    AbortRequest,
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    GenerateRequest,
)
from arborlm.runtime.server.streams import collect
from arborlm.runtime.server.tokenizer_manager import TokenizerManager
from arborlm.runtime.types import SamplingParams

logger = logging.getLogger("arborlm.server")
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "invalid request"},
    401: {"model": ErrorResponse, "description": "missing or wrong API key"},
}


@dataclass
class ServerState:
    tm: TokenizerManager
    model_name: str
    model_info: dict[str, Any]
    server_args: dict[str, Any]
    api_key: str | None = None
    started: float = field(default_factory=time.time)


class BearerAuth:
    """Pure ASGI (BaseHTTPMiddleware would get in the way of streaming and disconnect detection)."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: tuple[str, ...] = ("/health",)) -> None:
        self.app, self.expected, self.open_paths = app, f"Bearer {api_key}".encode(), open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            got = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(got, self.expected):
                err = ApiError("missing or invalid API key: send 'Authorization: Bearer <key>'", 401,
                               type="authentication_error")
                await JSONResponse(err.body(), 401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class JsonContentType:
    """Treat every POST body as JSON whatever its Content-Type (`curl -d` sends a form type)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = dict(scope, headers=headers + [(b"content-type", b"application/json")])
        await self.app(scope, receive, send)


def _validation_error(exc: RequestValidationError) -> ApiError:
    parts, param = [], None
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if e.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON: {e.get('ctx', {}).get('error', e.get('msg'))}")
            continue
        if not loc and e.get("type") == "model_attributes_type":
            parts.append("the request body must be a JSON object")
            continue
        where = ".".join(loc)
        param = param or where or None
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return ApiError("; ".join(dict.fromkeys(parts))[:2000] or "invalid request", param=param)


def create_app(state: ServerState,
               lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None) -> FastAPI:
    app = FastAPI(title="arborlm", version="0.1.0", lifespan=lifespan)
    app.state.server = state
    tm = state.tm

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = _validation_error(exc)
        return JSONResponse(err.body(), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = ApiError(str(exc.detail), exc.status_code, type="invalid_request_error")
        return JSONResponse(err.body(), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        err = ApiError(f"internal error: {type(exc).__name__}: {exc}", 500, type="server_error")
        return JSONResponse(err.body(), 500)

    @app.get("/health")
    async def health() -> Response:
        if tm.dead_reason:
            return JSONResponse(ApiError(tm.dead_reason, 503, type="server_error").body(), 503)
        return JSONResponse({"status": "ok"})

    @app.get("/health_generate", responses=ERRORS)
    async def health_generate(request: Request) -> Response:
        """Generate one real token end to end."""
        ids = [int(tm.tokenizer.bos_token_id or 0)]
        s = await tm.submit(ids, SamplingParams(max_new_tokens=1, temperature=0.0), False)
        try:
            await asyncio.wait_for(collect(request, tm, [s]), 60)
        except (TimeoutError, ApiError) as e:
            return JSONResponse(ApiError(f"health generation failed: {e}", 503, type="server_error").body(), 503)
        return JSONResponse({"status": "ok", "output_ids": s.output_ids})

    @app.get("/v1/models", responses=ERRORS)
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": state.model_name, "object": "model", "created": int(state.started), "owned_by": "arborlm",
            "root": state.model_info.get("path", state.model_name), "max_model_len": tm.max_context_len}]}

    @app.get("/get_model_info", responses=ERRORS)
    async def get_model_info() -> dict[str, Any]:
        return {"model_path": state.model_info.get("path", state.model_name), "is_generation": True,
                "max_context_len": tm.max_context_len, "vocab_size": tm.vocab_size, **state.model_info}

    @app.get("/get_server_info", responses=ERRORS)
    async def get_server_info() -> dict[str, Any]:
        stats = await tm.rpc("stats")
        return {"server_args": state.server_args, "scheduler": stats, "num_active_requests": len(tm.states),
                "uptime_s": time.time() - state.started, "version": "0.1.0"}

    @app.post("/flush_cache", responses=ERRORS | {409: {"model": ErrorResponse}})
    async def flush_cache() -> Response:
        if not await tm.rpc("flush_cache"):
            raise ApiError("cannot flush the cache while requests are running", 409, type="conflict")
        return JSONResponse({"success": True})

    @app.post("/abort_request", responses=ERRORS | {404: {"model": ErrorResponse}})
    async def abort_request(body: AbortRequest) -> dict[str, Any]:
        if not await tm.abort(body.rid):
            raise ApiError(f"no running request with rid {body.rid!r}", 404, param="rid")
        return {"success": True}

    @app.get("/metrics", responses=ERRORS)
    async def metrics() -> Response:
        try:
            tm.metrics.set_scheduler_stats(await tm.rpc("stats", timeout=5.0))
        except ApiError:  # still answer: counters and histograms live here
            pass
        return Response(tm.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/generate", responses=ERRORS)
    async def generate(request: Request, body: GenerateRequest) -> Response:
        return await native_api.generate(request, body, tm)

    @app.post("/v1/completions", responses=ERRORS)
    async def completions(request: Request, body: CompletionRequest) -> Response:
        return await openai_api.completions(request, body, tm, body.model or state.model_name)

    @app.post("/v1/chat/completions", responses=ERRORS)
    async def chat_completions(request: Request, body: ChatCompletionRequest) -> Response:
        return await openai_api.chat_completions(request, body, tm, body.model or state.model_name)

    app.add_middleware(JsonContentType)
    if state.api_key:  # added last: runs first
        app.add_middleware(BearerAuth, api_key=state.api_key)
    return app
