"""Guarding outlines-core's regex builder: it *aborts the process* when an allocation fails (a few
hundred optional properties can need gigabytes), which must not take the server down. Big schemas
are therefore converted in a forked, memory-capped child."""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from outlines_core.json_schema import build_regex_from_schema

from .regex_gen import UnsupportedSchema

MAX_REGEX_CHARS = 16_000_000
_GUARD_ESTIMATE = 50_000  # above this (linear) size estimate, build the regex in a child process


def estimate_regex_size(n: Any, ph: dict[str, str]) -> int:
    """Linear size estimate of outlines-core's regex for a normalised schema (the real size grows
    with the number of optional properties per object, so this is only a trigger for the guard)."""
    if not isinstance(n, dict):
        return 10
    if "anyOf" in n:
        return 2 + sum(estimate_regex_size(b, ph) for b in n["anyOf"])
    if "enum" in n:
        return 2 + sum(len(ph.get(v, "")) if isinstance(v, str) else 0 for v in n["enum"]) + len(json.dumps(n["enum"]))
    t = n.get("type")
    if t == "object":
        if "properties" not in n:
            return 13_000 + 2 * estimate_regex_size(n.get("additionalProperties", {}), ph)
        return 4 + sum(len(k) + 4 + estimate_regex_size(v, ph) for k, v in n["properties"].items())
    if t == "array":
        if "prefixItems" in n:
            return 4 + sum(estimate_regex_size(x, ph) for x in n["prefixItems"])
        return 13_000 if "items" not in n else 8 + estimate_regex_size(n["items"], ph)
    return 60


def limit_address_space(extra_bytes: int, hard: bool = True) -> None:
    """Cap this process's address space at its current size + extra_bytes (a forked child's guard
    against a build that would exhaust the machine); `hard=False` sets the soft limit only."""
    import resource

    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, vm + extra_bytes if hard else resource.RLIM_INFINITY))


def run_in_child(work: Callable[[], bytes], extra_bytes: int, hard: bool = True,
                 timeout_s: float | None = None, setup: Callable[[], None] | None = None) -> tuple[bytes, int]:
    """Run `work` in a forked child (after `setup`, with its address space capped at +extra_bytes
    when > 0) and return (the bytes it produced, its wait status). Past `timeout_s` the child is
    killed and TimeoutError raised. A child that raises exits 1 with nothing written."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the work and a pipe write, then _exit
        try:
            os.close(r)
            if setup is not None:
                setup()
            if extra_bytes > 0:
                limit_address_space(extra_bytes, hard)
            data = work()
            with os.fdopen(w, "wb") as f:
                f.write(data)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    os.close(w)
    chunks: list[bytes] = []
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with os.fdopen(r, "rb", buffering=0) as f:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and (left <= 0 or not select.select([f], [], [], left)[0]):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError(f"child still running after {timeout_s} s")
            chunk = f.read(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    return b"".join(chunks), status


def guarded_build_regex(schema_json: str, ws: str, extra_bytes: int = 3 << 30) -> str:
    """build_regex_from_schema in a forked child with a memory cap: outlines-core *aborts the
    process* when an allocation fails (e.g. a few hundred optional properties), which must not take
    the server down. Returns the regex or raises UnsupportedSchema."""

    def work() -> bytes:
        out = build_regex_from_schema(schema_json, ws)
        return (out if len(out) <= MAX_REGEX_CHARS else "\x00TOO_LARGE").encode()

    data, status = run_in_child(work, extra_bytes)
    if status != 0 or not data:
        raise UnsupportedSchema("schema too large: building its regex exceeded the memory limit")
    out = data.decode()
    if out == "\x00TOO_LARGE":
        raise UnsupportedSchema(f"schema too large: its regex exceeds {MAX_REGEX_CHARS} characters")
    return out




def needs_guard(normed: Any, placeholders: dict[str, str]) -> bool:
    return estimate_regex_size(normed, placeholders) > _GUARD_ESTIMATE and hasattr(os, "fork")
