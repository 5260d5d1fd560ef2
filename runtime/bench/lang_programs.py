"""The frontend-language programs of the shipped workloads, shared by `arborlm bench programs` and
examples/: few-shot GSM8K, fork(4) tips over topics, and the ReAct replay of recorded traces."""

from __future__ import annotations

from typing import Any

import arborlm as al
from arborlm.runtime.data import read_jsonl, workload

REACT_FILE = "react_hotpotqa_100.jsonl"
REACT_FEW_SHOT_FROM = 90  # few-shot examples come from traces the replay never uses
MAX_OBSERVATION_CHARS = 400  # recorded observations are whole Wikipedia paragraphs: keep CPU prompts short


def gsm8k_few_shot(num_shots: int) -> str:
    rows = read_jsonl(workload("gsm8k_train.jsonl"))[:num_shots]
    return "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in rows)


def gsm8k_questions(n: int) -> list[str]:
    return [r["question"] for r in read_jsonl(workload("gsm8k_test.jsonl"))[:n]]


def gsm8k_prompt(prefix: str, question: str) -> str:
    return prefix + "Question: " + question + "\nAnswer:"


def gsm8k_program(prefix: str, max_tokens: int | None, stop: str | None = "Question:") -> Any:
    """max_tokens None: the run's `max_new_tokens` default applies."""

    @al.program
    def gsm8k(s, question):
        s += prefix + "Question: " + question + "\nAnswer:"
        s += al.gen("answer", max_tokens=max_tokens, stop=stop)

    return gsm8k


def tip_topics(n: int) -> list[dict[str, Any]]:
    return read_jsonl(workload("tip_topics.jsonl"))[:n]


TIPS_HEAD = "Here are some short tips, one line each.\nTopic: {topic}\n"


def tips_program(num_branches: int, max_tokens: int) -> Any:
    """fork(n): one tip per branch; join gathers them; the parent then writes a summary after them."""

    @al.program
    def tips(s, topic):
        s += TIPS_HEAD.format(topic=topic)
        forks = s.fork(num_branches)
        for i, f in enumerate(forks):
            f += f"Tip {i + 1}:" + al.gen("tip", max_tokens=max_tokens, stop="\n")
        forks.join()
        s += "".join(f"Tip {i + 1}:{t}\n" for i, t in enumerate(s["tip"]))
        s += "In summary:" + al.gen("summary", max_tokens=max_tokens, stop="\n")

    return tips


def load_react_traces(n: int) -> list[tuple[str, list[dict[str, str]]]]:
    """The first `n` recorded traces: (question line, steps of thought / action / observation)."""
    rows = read_jsonl(workload(REACT_FILE))
    out = []
    for row in rows[:n]:
        ((question, steps),) = row.items()
        out.append((question, steps))
    return out


def react_step_text(i: int, step: dict[str, str], max_observation_chars: int | None = MAX_OBSERVATION_CHARS) -> str:
    """Step `i` of a recorded trace as the prompt shows it (None: the whole observation)."""
    obs = step["observation"][:max_observation_chars]
    return f"Thought {i}: {step['thought']}\nAction {i}: {step['action']}\nObservation {i}: {obs}\n"


def react_few_shot(num_examples: int = 2) -> str:
    rows = read_jsonl(workload(REACT_FILE))[REACT_FEW_SHOT_FROM:REACT_FEW_SHOT_FROM + num_examples]
    head = ("Solve a question answering task with interleaving Thought, Action, Observation steps. Action "
            "can be Search[entity], Lookup[keyword] or Finish[answer].\n")
    parts = []
    for row in rows:
        ((question, steps),) = row.items()
        parts.append(question + "\n" + "".join(react_step_text(i + 1, st) for i, st in enumerate(steps[:3])))
    return head + "\n".join(parts) + "\n"


def react_replay(few_shot: str, stop: str | list[str] = "\n",
                 max_observation_chars: int | None = MAX_OBSERVATION_CHARS) -> Any:
    """Each step: the model writes a thought (in a fork(1) branch that shares the prefix), then the
    recorded step is added, so the next step's prompt extends this one. Step i's output is the
    variable `thought_i` (a one-item list, from the join); step i's prompt is the trace so far
    followed by "Thought i:"."""

    @al.program
    def react(s, question, steps):
        s += few_shot + question + "\n"
        for i, step in enumerate(steps, start=1):
            forks = s.fork(1)
            forks[0] += f"Thought {i}:" + al.gen(f"thought_{i}", stop=stop)
            forks.join()
            s += react_step_text(i, step, max_observation_chars)

    return react
