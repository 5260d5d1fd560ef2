"""`arborlm bench peers` orchestration with fake systems (no model): warm-up, alternation order,
skipped and failing peers, workload selection and the reproducing command line."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from arborlm.runtime.bench.peers import run_workload, select_workloads, warmup_inputs
from arborlm.runtime.bench.peers_inputs import GenInputs
from arborlm.runtime.bench.peers_report import RunMeasurement
from arborlm.runtime.bench.peers_workloads import Workload, build_workloads
from arborlm.runtime.cli import build_parser


class FakeContext:
    def __init__(self, missing: dict[str, str]) -> None:
        self.missing = missing

    def why_unavailable(self, system: str) -> str | None:
        return self.missing.get(system)

    def system_info(self, system: str) -> dict[str, Any]:
        return {"weights": f"{system}-weights"}


def _inputs() -> GenInputs:
    return GenInputs(["p0", "p1"], [[1, 2], [1, 3]], max_new_tokens=8, references=["1", "2"])


def _recording_runner(system: str, calls: list[tuple[str, int]], wall_s: float, fail: bool = False) -> Any:
    def runner(_ctx: Any, inputs: GenInputs) -> RunMeasurement:
        calls.append((system, inputs.max_new_tokens))
        if fail and inputs.max_new_tokens == 8:
            raise RuntimeError("peer crashed")
        return RunMeasurement(wall_s, 16, texts=["#### 1", "#### 3" if system == "arborlm" else "#### 2"])
    return runner


def test_systems_alternate_after_one_warmup_each_and_report_medians() -> None:
    calls: list[tuple[str, int]] = []
    cleaned: list[bool] = []
    workload = Workload("w", "test", lambda _ctx: _inputs(),
                        {s: _recording_runner(s, calls, t) for s, t in (("arborlm", 1.0), ("a", 2.0), ("b", 4.0))},
                        score=lambda inputs, texts: {"n": len(texts)}, cleanup=lambda _ctx: cleaned.append(True))
    lines = run_workload(FakeContext({}), workload, None, repeats=3)
    assert calls[:3] == [("arborlm", 4), ("a", 4), ("b", 4)]  # warm-ups: 4-token slices, untimed
    assert [s for s, _ in calls[3:]] == ["arborlm", "a", "b", "a", "b", "arborlm", "b", "arborlm", "a"]
    assert cleaned == [True]
    ours, a, _b = lines
    assert ours["repeats"] == 3 and ours["wall_s"] == 1.0 and ours["n"] == 2
    assert ours["ratios"]["b"]["wall_s"] == 4.0
    assert a["same_text_share_vs_arborlm"] == 0.5 and "same_text_share_vs_arborlm" not in ours


def test_missing_peer_is_skipped_and_failing_peer_reports_its_error() -> None:
    calls: list[tuple[str, int]] = []
    runners = {"arborlm": _recording_runner("arborlm", calls, 1.0),
               "llama.cpp": _recording_runner("llama.cpp", calls, 2.0),
               "broken": _recording_runner("broken", calls, 2.0, fail=True)}
    workload = Workload("w", "test", lambda _ctx: _inputs(), runners,
                        requires={"llama.cpp": "llama.cpp-server"})
    ctx = FakeContext({"llama.cpp-server": "llama-cpp-python's server extra is not installed"})
    lines = run_workload(ctx, workload, None, repeats=2)
    ours, skipped, broken = lines
    assert skipped == {"bench": "peers", "workload": "w", "system": "llama.cpp", "kind": "result",
                       "skipped": True, "reason": "llama-cpp-python's server extra is not installed",
                       "weights": "llama.cpp-weights"}
    assert broken["failed"] is True and broken["error"] == "RuntimeError: peer crashed" and "wall_s" not in broken
    assert [s for s, _ in calls].count("broken") == 2  # warm-up, then the first timed run: no more after it failed
    assert ours["repeats"] == 2 and ours["ratios"] == {}


def test_systems_filter_leaves_the_others_out() -> None:
    calls: list[tuple[str, int]] = []
    workload = Workload("w", "test", lambda _ctx: _inputs(),
                        {s: _recording_runner(s, calls, 1.0) for s in ("arborlm", "transformers")})
    lines = run_workload(FakeContext({}), workload, ["transformers"], repeats=1)
    assert [ln["system"] for ln in lines] == ["transformers"] and {s for s, _ in calls} == {"transformers"}


def test_warmup_slices_every_input_kind() -> None:
    react = GenInputs(["a", "ab", "x"], [[1], [1, 2], [3]], 64, stop=["\nObservation"], trajectories=[[0, 1], [2]])
    warm = warmup_inputs(react)
    assert warm.prompt_ids == [[1]] and warm.trajectories == [[0]] and warm.max_new_tokens == 4
    assert warm.stop == ["\nObservation"]


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", "peers", *argv])


def test_workload_selection_and_chat_group() -> None:
    args = _args()
    args.chat_concurrency = [1, 16]
    available = build_workloads(args)
    assert list(available) == ["few-shot", "chat-c1", "chat-c16", "latency", "json", "batched-decode", "react"]
    assert [w.name for w in select_workloads("chat,json", available)] == ["chat-c1", "chat-c16", "json"]
    with pytest.raises(SystemExit, match="unknown workload 'nope'"):
        select_workloads("nope", available)


def test_command_line_reproduces_the_non_default_options() -> None:
    from arborlm.runtime.bench.peers import command_line

    assert command_line(_args()) == "arborlm bench peers"
    args = _args("--repeats", "5", "--workloads", "json", "--plot", "out file.png", "--threads", "2")
    assert command_line(args) == "arborlm bench peers --workloads json --repeats 5 --plot 'out file.png' --threads 2"
