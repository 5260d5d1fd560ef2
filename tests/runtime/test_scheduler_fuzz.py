"""Hypothesis fuzz of Scheduler + KVManager on the slot-checking fake runner (no model).

Random workloads: arrival steps, prompts sharing prefixes, tiny pools, chunk sizes, prefill
budgets, both policies, with and without the radix cache, aborts at random steps, jump-forward
drafts (right and wrong ones) verified under retraction. After every step
the KV accounting invariant holds and the runner has seen no free / duplicated / stale slot; every
request finishes with the output a solo run gives; and the run obeys the progress bound stated in
the Scheduler docstring: steps with work <= sum over requests of (prompt length + max_new_tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fake_runner import expected_output, make_scheduler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arborlm.runtime.types import Req, SamplingParams


@dataclass
class Arrival:
    step: int
    prompt: list[int]
    max_new_tokens: int
    abort_after: int | None  # steps after arrival at which the client aborts, or never
    drafts: bool  # a grammar that proposes jump-forward drafts (some wrong) for this request


@dataclass
class Workload:
    num_tokens: int
    config: dict
    arrivals: list[Arrival]


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    num_tokens = draw(st.integers(16, 96))
    config = {
        "max_running_requests": draw(st.integers(1, 6)),
        "chunked_prefill_size": draw(st.sampled_from([0, 1, 2, 3, 4, 8, 16])),
        "max_prefill_tokens": draw(st.integers(1, 64)),
        "schedule_policy": draw(st.sampled_from(["lpm", "fcfs"])),
        "disable_radix_cache": draw(st.booleans()),
    }
    prefixes = draw(st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=40), min_size=1, max_size=3))
    arrivals = []
    for _ in range(draw(st.integers(1, 8))):
        prefix = draw(st.sampled_from(prefixes))
        prompt = prefix[: draw(st.integers(1, len(prefix)))] + draw(st.lists(st.integers(1, 40), max_size=12))
        prompt = prompt[: num_tokens - 1]
        max_new = draw(st.integers(0, num_tokens - len(prompt)))
        abort_after = draw(st.one_of(st.none(), st.integers(0, 30)))
        arrivals.append(Arrival(draw(st.integers(0, 40)), prompt, max_new, abort_after, draw(st.booleans())))
    return Workload(num_tokens, config, sorted(arrivals, key=lambda a: a.step))


def run_workload(w: Workload) -> None:
    sched = make_scheduler(w.num_tokens, **w.config)
    reqs: list[tuple[Arrival, Req]] = []
    aborted: set[str] = set()
    pending = list(w.arrivals)
    bound = sum(len(a.prompt) + a.max_new_tokens for a in w.arrivals)
    steps_with_work = step = 0
    while pending or sched.has_work():
        while pending and pending[0].step <= step:
            a = pending.pop(0)
            params = SamplingParams(max_new_tokens=a.max_new_tokens, temperature=0.0, ignore_eos=True,
                                    regex=",".join(map(str, a.prompt)) if a.drafts else None)
            req = Req(f"r{len(reqs)}", list(a.prompt), params)
            sched.add_request(req)
            reqs.append((a, req))
        for a, req in reqs:
            if a.abort_after is not None and step == a.step + a.abort_after and sched.abort_request(req.rid):
                aborted.add(req.rid)
        steps_with_work += bool(sched.running or sched.waiting)
        sched.step()
        sched.check_invariants()
        step += 1
        assert steps_with_work <= bound, f"no progress: {steps_with_work} steps with work > bound {bound}"
    for a, req in reqs:
        assert req.finished and not req.draft_ids
        if req.rid not in aborted:
            assert req.finish_reason.kind == "length"
            assert req.output_ids == expected_output(a.prompt, a.max_new_tokens), req.rid
    stats = sched.stats()
    assert stats["protected_tokens"] == 0 and stats["free_slots"] + stats["tokens_in_tree"] == w.num_tokens
    assert sched.kv.rows.num_free == w.config["max_running_requests"]


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(workloads())
def test_scheduler_fuzz(w: Workload) -> None:
    run_workload(w)


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads())
def test_scheduler_fuzz_long(w: Workload) -> None:
    run_workload(w)
