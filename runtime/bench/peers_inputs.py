"""`arborlm bench peers`: the identical inputs every system gets, and how outputs are scored.

Every workload's prompts are built once as text and tokenized once with arborlm's tokenizer;
systems that accept token ids (arborlm, transformers, llama-cpp-python) get those very ids, so a
difference in tokenizers cannot change what is measured. Data comes from `arborlm.runtime.data`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from arborlm.runtime.bench.json_bench import CHARACTER_SCHEMA
from arborlm.runtime.bench.lang_programs import (
    gsm8k_few_shot,
    gsm8k_program,
    gsm8k_prompt,
    load_react_traces,
    react_replay,
    react_step_text,
)
from arborlm.runtime.data import read_jsonl, workload

FEW_SHOT_NUM_SHOTS = 8
REACT_MAX_NEW_TOKENS = 64
REACT_STOP = ("\nObservation",)  # a step's thought and action; the observation is the tool's
REACT_INSTRUCTION = (
    "Answer the question by interleaving Thought, Action and Observation steps. A Thought reasons "
    "about the situation so far; an Action is Search[entity], Lookup[keyword] or Finish[answer].\n"
)


@dataclass(frozen=True)
class ProgramInputs:
    """The frontend language's form of a workload's prompts: `program.run_batch(items)` makes
    exactly the workload's prompts, one `gen` per prompt; the gens' outputs are the program's
    variables, in the order it sets them (see `peers_program.generated_texts`)."""

    program: Any  # an @al.program
    items: list[dict[str, Any]]  # its arguments, one run_batch item each


@dataclass
class GenInputs:
    """What one workload sends to every system."""

    prompts: list[str]
    prompt_ids: list[list[int]]
    max_new_tokens: int
    ignore_eos: bool = False  # every system decodes exactly max_new_tokens
    json_schema: dict[str, Any] | None = None
    stop: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # expected answers, for scoring
    user_messages: list[str] = field(default_factory=list)  # the chat turn inside each prompt, if any
    # ReAct: prompt indices per trajectory in step order; each step's prompt extends the previous one
    trajectories: list[list[int]] = field(default_factory=list)
    program: ProgramInputs | None = None  # the same prompts as a frontend-language program, if any


def _chat(tokenizer: Any, user_message: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": user_message}], tokenize=False,
                                         add_generation_prompt=True)


def _encode(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    return [tokenizer.encode(p, add_special_tokens=False) for p in prompts]


def few_shot_inputs(tokenizer: Any, num_questions: int, max_new_tokens: int = 64) -> GenInputs:
    prefix = gsm8k_few_shot(FEW_SHOT_NUM_SHOTS)
    test = read_jsonl(workload("gsm8k_test.jsonl"))[:num_questions]
    prompts = [gsm8k_prompt(prefix, ex["question"]) for ex in test]
    # max_tokens None: the runner's max_new_tokens default (inputs.max_new_tokens) applies
    program = ProgramInputs(gsm8k_program(prefix, None, stop=None), [{"question": ex["question"]} for ex in test])
    return GenInputs(prompts, _encode(tokenizer, prompts), max_new_tokens,
                     references=[extract_answer(ex["answer"]) or "" for ex in test], program=program)


def mt_bench_first_turns(num: int) -> list[str]:
    questions = [q["turns"][0] for q in read_jsonl(workload("mt_bench_question.jsonl"))]
    return [questions[i % len(questions)] for i in range(num)]


def decode_inputs(tokenizer: Any, num_prompts: int, max_new_tokens: int) -> GenInputs:
    """Chat-templated MT-Bench first turns, each decoding exactly max_new_tokens (batched decode and
    single-stream latency)."""
    prompts = [_chat(tokenizer, q) for q in mt_bench_first_turns(num_prompts)]
    return GenInputs(prompts, _encode(tokenizer, prompts), max_new_tokens, ignore_eos=True)


def character_card_inputs(tokenizer: Any, num_names: int, max_new_tokens: int = 256) -> GenInputs:
    names = [n.strip() for n in workload("names_50.txt").read_text().splitlines() if n.strip()][:num_names]
    messages = [f"Give the character card of {n} from Harry Potter as JSON." for n in names]
    prompts = [_chat(tokenizer, m) for m in messages]
    return GenInputs(prompts, _encode(tokenizer, prompts), max_new_tokens, json_schema=CHARACTER_SCHEMA,
                     user_messages=messages)


def react_inputs(tokenizer: Any, num_trajectories: int, max_new_tokens: int = REACT_MAX_NEW_TOKENS) -> GenInputs:
    """Replay of recorded HotpotQA ReAct traces: step k's prompt is the question plus the recorded
    thoughts, actions and observations (whole) of steps 1..k-1, ending in "Thought k:"."""
    prompts: list[str] = []
    trajectories: list[list[int]] = []
    traces = load_react_traces(num_trajectories)
    for question, steps in traces:
        trace = REACT_INSTRUCTION + question + "\n"
        indices = []
        for k, step in enumerate(steps, start=1):
            indices.append(len(prompts))
            prompts.append(trace + f"Thought {k}:")
            trace += react_step_text(k, step, max_observation_chars=None)
        trajectories.append(indices)
    program = ProgramInputs(react_replay(REACT_INSTRUCTION, stop=list(REACT_STOP), max_observation_chars=None),
                            [{"question": question, "steps": steps} for question, steps in traces])
    return GenInputs(prompts, _encode(tokenizer, prompts), max_new_tokens, stop=list(REACT_STOP),
                     trajectories=trajectories, program=program)


_ANSWER = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")


def extract_answer(text: str) -> str | None:
    """The number after the first `####`, without thousands separators (None when there is none)."""
    m = _ANSWER.search(text)
    if m is None:
        return None
    number = m.group(1).replace(",", "")
    return number[:-2] if number.endswith(".0") else number


def score_accuracy(inputs: GenInputs, texts: list[str]) -> dict[str, Any]:
    right = sum(extract_answer(t) == ref for t, ref in zip(texts, inputs.references))
    return {"accuracy": round(right / max(1, len(inputs.references)), 3)}


def why_invalid(text: str, schema: dict[str, Any]) -> str | None:
    """None for output valid against the schema, else a short reason."""
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except ValueError as e:
        return f"not JSON: {e}"[:120]
    except jsonschema.ValidationError as e:
        return f"schema: {e.message}"[:120]
    return None


def score_json_valid(inputs: GenInputs, texts: list[str]) -> dict[str, Any]:
    reasons = [why_invalid(t, inputs.json_schema or {}) for t in texts]
    score: dict[str, Any] = {"valid_share": round(sum(r is None for r in reasons) / max(1, len(texts)), 3)}
    first_bad = next((r for r in reasons if r is not None), None)
    if first_bad is not None:
        score["first_invalid_reason"] = first_bad
    return score
