"""Schedule policies: the order in which waiting requests are considered for admission.

A policy is a function (waiting, prefix_len) -> ordered list, where prefix_len(req) tells how many
of the request's tokens the radix cache holds now. Registered by name; `--schedule-policy` picks.
"""

from __future__ import annotations

from collections.abc import Callable

from arborlm.runtime.types import Req

Policy = Callable[[list[Req], Callable[[Req], int]], list[Req]]
POLICIES: dict[str, Policy] = {}

# Sorting by prefix match costs one tree walk per waiting request per step: past this queue length
# the ordering is not worth it and lpm falls back to fcfs (as SGLang does).
LPM_MAX_QUEUE = 128


def register(name: str) -> Callable[[Policy], Policy]:
    def deco(fn: Policy) -> Policy:
        POLICIES[name] = fn
        return fn

    return deco


@register("fcfs")
def fcfs(waiting: list[Req], prefix_len: Callable[[Req], int]) -> list[Req]:
    return list(waiting)


@register("lpm")
def longest_prefix_match(waiting: list[Req], prefix_len: Callable[[Req], int]) -> list[Req]:
    if len(waiting) > LPM_MAX_QUEUE:
        return list(waiting)
    # Stable sort: among equal matches, arrival order is kept.
    return sorted(waiting, key=lambda r: -prefix_len(r))


def get_policy(name: str) -> Policy:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown schedule policy {name!r}; choose one of {sorted(POLICIES)}") from None
