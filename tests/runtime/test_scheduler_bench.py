"""`arborlm bench scheduler` runs end to end on a small tree (numbers are not asserted: timings
belong to the benchmark's JSON lines, not to tests)."""

from __future__ import annotations

import argparse

from arborlm.runtime.bench.scheduler_bench import run


def test_scheduler_bench_small() -> None:
    args = argparse.Namespace(tree_nodes=400, num_waiting=24, steps=12, max_running=8, max_new_tokens=3,
                              num_slots=4000, repeats=1, force_lpm=True)
    lines = run(args)
    by_system = {line.get("system"): line for line in lines if "system" in line}
    assert set(by_system) == {"arborlm", "full_scan_peer"}
    for line in by_system.values():  # both drove the same requests through the real Scheduler
        assert line["tree_nodes_at_start"] >= 400 and line["generated_tokens"] > 0
    assert by_system["arborlm"]["generated_tokens"] == by_system["full_scan_peer"]["generated_tokens"]
    assert by_system["arborlm"]["requests_added"] == by_system["full_scan_peer"]["requests_added"]
    assert lines[-1]["metric"] == "median_step_ms" and lines[-1]["speedup"] > 0
