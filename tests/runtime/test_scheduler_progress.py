"""Scheduler policy regressions on the model-free runner (tests/runtime/fake_runner.py): progress
under memory pressure (issue 11, defect 1) and admission without a radix tree (defect 7)."""

from __future__ import annotations

import pytest
from fake_runner import expected_output, make_scheduler

from arborlm.runtime.scheduler import Scheduler
from arborlm.runtime.types import Req, SamplingParams

# issue 11 defect 1: arrival step -> (prompt length, max_new_tokens)
LIVELOCK_ARRIVALS = {6: (31, 4), 7: (49, 5), 13: (36, 12), 22: (33, 30)}
LIVELOCK_CONFIG = dict(max_running_requests=4, max_prefill_tokens=48, chunked_prefill_size=4,
                       disable_radix_cache=True)


def prompt(seed: int, n: int) -> list[int]:
    return [(seed * 7 + i) % 40 + 1 for i in range(n)]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0.0, ignore_eos=True)


def run_arrivals(sched: Scheduler, arrivals: dict[int, tuple[int, int]], max_steps: int) -> dict[str, Req]:
    reqs: dict[str, Req] = {}
    for step in range(max_steps):
        if step in arrivals:
            n, m = arrivals[step]
            reqs[f"r{step}"] = Req(f"r{step}", prompt(step, n), greedy(m))
            sched.add_request(reqs[f"r{step}"])
        sched.step()
        sched.check_invariants()
        if step > max(arrivals) and not sched.has_work():
            break
    return reqs


@pytest.mark.parametrize("disable_radix_cache", [True, False])
def test_memory_pressure_makes_progress(disable_radix_cache: bool) -> None:
    """The issue's repro: before the fix only one of four requests finished in 400 steps."""
    sched = make_scheduler(64, **{**LIVELOCK_CONFIG, "disable_radix_cache": disable_radix_cache})
    reqs = run_arrivals(sched, LIVELOCK_ARRIVALS, 400)
    bound = max(LIVELOCK_ARRIVALS) + sum(n + m for n, m in LIVELOCK_ARRIVALS.values())
    assert all(r.finished for r in reqs.values()), {r.rid: r.num_retractions for r in reqs.values()}
    assert sched.runner.num_forwards <= bound
    for step, (n, m) in LIVELOCK_ARRIVALS.items():
        r = reqs[f"r{step}"]
        assert r.finish_reason.kind == "length"
        assert r.output_ids == expected_output(prompt(step, n), m)
        assert r.num_retractions <= 3


def test_head_is_never_retracted() -> None:
    sched = make_scheduler(64, **LIVELOCK_CONFIG)
    retracted_heads = []
    original = sched._retract

    def spy(req: Req) -> None:
        if sched.running and req is sched.running[0]:
            retracted_heads.append(req.rid)
        original(req)

    sched._retract = spy  # type: ignore[method-assign]
    run_arrivals(sched, LIVELOCK_ARRIVALS, 400)
    assert retracted_heads == []


def test_no_tree_admits_shared_prefix_together() -> None:
    """Defect 7: without a radix cache, deferring a request that shares a prefix with one admitted
    in the same round gains nothing; all four must start in the first step."""
    sched = make_scheduler(4096, max_running_requests=8, disable_radix_cache=True)
    shared = prompt(1, 40)
    for i in range(4):
        sched.add_request(Req(f"s{i}", shared + [i + 1, i + 2], greedy(3)))
    sched.step()
    assert len(sched.running) == 4
    with_tree = make_scheduler(4096, max_running_requests=8)
    for i in range(4):
        with_tree.add_request(Req(f"s{i}", shared + [i + 1, i + 2], greedy(3)))
    with_tree.step()
    assert len(with_tree.running) == 1  # with a tree the deferral still applies
