"""Guarding outlines-core's regex builder: it *aborts the process* when an allocation fails (a few
hundred optional properties can need gigabytes), which must not take the server down. Big schemas
are therefore converted in a forked, memory-capped child."""

from __future__ import annotations

import json
import os
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


def guarded_build_regex(schema_json: str, ws: str, extra_bytes: int = 3 << 30) -> str:
    """build_regex_from_schema in a forked child with a memory cap: outlines-core *aborts the
    process* when an allocation fails (e.g. a few hundred optional properties), which must not take
    the server down. Returns the regex or raises UnsupportedSchema."""

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only Rust work and a pipe write, then _exit
        try:
            os.close(r)
            limit_address_space(extra_bytes)
            out = build_regex_from_schema(schema_json, ws)
            data = (out if len(out) <= MAX_REGEX_CHARS else "\x00TOO_LARGE").encode()
            with os.fdopen(w, "wb") as f:
                f.write(data)
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(1)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise UnsupportedSchema("schema too large: building its regex exceeded the memory limit")
    out = data.decode()
    if out == "\x00TOO_LARGE":
        raise UnsupportedSchema(f"schema too large: its regex exceeds {MAX_REGEX_CHARS} characters")
    return out




def needs_guard(normed: Any, placeholders: dict[str, str]) -> bool:
    return estimate_regex_size(normed, placeholders) > _GUARD_ESTIMATE and hasattr(os, "fork")
