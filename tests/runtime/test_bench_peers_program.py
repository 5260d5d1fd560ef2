"""`arborlm bench peers` system "arborlm-program": the frontend-language programs of few-shot and
ReAct send exactly the workload's prompts (the ones every other system gets), with its greedy
settings, and the runner returns their outputs in prompt order. A recording backend (no model)
stands in for the engine; the end-to-end run on the tiny model is in test_bench_peers_smoke.py."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from arborlm.backends.base import Backend, CallMeta, GenResult
from arborlm.runtime.bench.lang_programs import MAX_OBSERVATION_CHARS
from arborlm.runtime.bench.peers import warmup_inputs
from arborlm.runtime.bench.peers_inputs import GenInputs, few_shot_inputs, react_inputs
from arborlm.runtime.bench.peers_program import run_batch


class CharTokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


class RecordingBackend(Backend):
    """Answers each gen with "out<i>", i the index of its prompt among the workload's prompts."""

    def __init__(self, prompts: list[str]) -> None:
        self.index = {p: i for i, p in enumerate(prompts)}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.num_flushes = 0
        self.lock = threading.Lock()

    def generate(self, prompt: str, params: dict[str, Any], messages: Any = None) -> GenResult:
        with self.lock:
            self.calls.append((prompt, params))
        if prompt not in self.index:
            raise AssertionError(f"the program sent a prompt no other system gets: ...{prompt[-80:]!r}")
        return GenResult(f"out{self.index[prompt]}", CallMeta(prompt_tokens=len(prompt), completion_tokens=3))

    def cache_prefix(self, prefix: str) -> CallMeta:
        return CallMeta(prompt_tokens=len(prefix))

    def flush_cache(self) -> bool:
        self.num_flushes += 1
        return True

    def stream(self, prompt: str, params: dict[str, Any], messages: Any = None) -> Any:
        raise AssertionError("the peers program runner only calls generate, cache_prefix and flush_cache")

    def select(self, prefix: str, choices: list[str], method: str) -> Any:
        raise AssertionError("the peers program runner only calls generate, cache_prefix and flush_cache")

    def chat_template(self) -> Any:
        raise AssertionError("the peers program runner only calls generate, cache_prefix and flush_cache")


class FakeContext:
    def __init__(self, backend: RecordingBackend) -> None:
        self.program_backend = backend


def _run(inputs: GenInputs) -> tuple[RecordingBackend, Any]:
    backend = RecordingBackend(inputs.prompts)
    return backend, run_batch(FakeContext(backend), inputs)  # type: ignore[arg-type]


@pytest.mark.parametrize("build", [lambda: few_shot_inputs(CharTokenizer(), 3, max_new_tokens=7),
                                   lambda: react_inputs(CharTokenizer(), 2, max_new_tokens=9)],
                         ids=["few-shot", "react"])
def test_program_sends_exactly_the_workloads_prompts_and_returns_outputs_in_prompt_order(build: Any) -> None:
    inputs = build()
    backend, run = _run(inputs)
    assert sorted(p for p, _ in backend.calls) == sorted(inputs.prompts)  # each prompt once, no other
    assert run.texts == [f"out{i}" for i in range(len(inputs.prompts))]
    assert run.output_tokens == 3 * len(inputs.prompts) and run.wall_s > 0 and backend.num_flushes == 1
    for _, params in backend.calls:
        assert params["temperature"] == 0.0 and params["max_new_tokens"] == inputs.max_new_tokens
        assert params.get("stop", []) == inputs.stop and "ignore_eos" not in params


def test_react_program_replays_whole_traces_step_by_step() -> None:
    inputs = react_inputs(CharTokenizer(), 2)
    assert inputs.stop == ["\nObservation"] and len(inputs.program.items) == 2
    steps = [len(t) for t in inputs.trajectories]
    assert [len(item["steps"]) for item in inputs.program.items] == steps and min(steps) >= 2
    # whole observations (the program's default truncation is off): step 2 extends step 1's full text
    first, second = inputs.prompts[0], inputs.prompts[1]
    observation = inputs.program.items[0]["steps"][0]["observation"]
    assert len(observation) > MAX_OBSERVATION_CHARS
    assert second.startswith(first[:-len("Thought 1:")]) and observation in second


def test_warmup_runs_one_program() -> None:
    inputs = warmup_inputs(few_shot_inputs(CharTokenizer(), 3, max_new_tokens=7))
    backend, run = _run(inputs)
    assert len(backend.calls) == 1 and run.texts == ["out0"]
    assert backend.calls[0][1]["max_new_tokens"] == 4


def test_failed_program_fails_the_run_with_its_error() -> None:
    inputs = few_shot_inputs(CharTokenizer(), 2)
    inputs.prompts[1] = "a prompt the program never makes"
    with pytest.raises(RuntimeError, match="1 of 2 programs failed; first: .*no other system gets"):
        _run(inputs)
