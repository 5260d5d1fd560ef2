"""Small HTTP helpers shared by the HTTP backends: JSON posts that turn 4xx/5xx bodies into
BackendError, and an SSE line reader."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from arborlm.backends.base import BackendError


def error_message(status: int, body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", body["error"]))
    return f"HTTP {status}: {body}"


def make_client(base_url: str, api_key: str | None, timeout: float) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    return httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, limits=limits)


def post_json(client: Any, path: str, body: dict[str, Any]) -> Any:
    import httpx

    try:
        r = client.post(path, json=body)
    except httpx.HTTPError as e:
        raise BackendError(f"{path}: {type(e).__name__}: {e}") from None
    try:
        data = r.json()
    except ValueError:
        data = r.text
    if r.status_code >= 400:
        raise BackendError(error_message(r.status_code, data))
    return data


def get_json(client: Any, path: str) -> Any:
    import httpx

    try:
        r = client.get(path)
    except httpx.HTTPError as e:
        raise BackendError(f"{path}: {type(e).__name__}: {e}") from None
    if r.status_code >= 400:
        raise BackendError(error_message(r.status_code, r.text))
    return r.json()


def post_sse(client: Any, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield each `data:` event of a streamed response as a dict (an error event raises)."""
    import httpx

    try:
        with client.stream("POST", path, json=body) as r:
            if r.status_code >= 400:
                r.read()
                try:
                    data = r.json()
                except ValueError:
                    data = r.text
                raise BackendError(error_message(r.status_code, data))
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                event = json.loads(payload)
                if isinstance(event, dict) and "error" in event:
                    raise BackendError(error_message(400, event))
                yield event
    except httpx.HTTPError as e:
        raise BackendError(f"{path}: {type(e).__name__}: {e}") from None
