"""Every primitive of the language, on the in-process Engine and on RuntimeEndpoint (a real
`arborlm serve`): the same tests run on both (the `backend` fixture)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from pydantic import BaseModel, Field

import arborlm as al
from arborlm.programs import ProgramError

FEW_SHOT = ("Q: What is the capital of Italy?\nA: Rome\n"
            "Q: What is the capital of Spain?\nA: Madrid\n"
            "Q: What is the capital of Germany?\nA: Berlin\n")


@al.program
def few_shot_qa(s, question):
    s += FEW_SHOT
    s += "Q: " + question + "\nA:"
    s += al.gen("answer", max_tokens=6, stop="\n")


def test_few_shot_qa(backend):
    state = few_shot_qa.run(question="What is the capital of France?", backend=backend, temperature=0)
    assert state["answer"].strip() == "Paris"
    assert state.text() == FEW_SHOT + "Q: What is the capital of France?\nA:" + state["answer"]
    meta = state.meta("answer")
    assert meta.finish_reason == "stop" and meta.prompt_tokens > 30 and meta.completion_tokens >= 1
    assert state.meta().prompt_tokens == meta.prompt_tokens


@al.program
def chat_functional(s, first, second):
    s += al.system("You are a concise assistant.")
    s += al.user(first)
    s += al.assistant(al.gen("a1", max_tokens=8))
    s += al.user(second)
    s += al.assistant(al.gen("a2", max_tokens=8))


@al.program
def chat_with_blocks(s, first, second):
    with s.system():
        s += "You are a concise assistant."
    with s.user():
        s += first
    with s.assistant():
        s += al.gen("a1", max_tokens=8)
    with s.user():
        s += second
    with s.assistant():
        s += al.gen("a2", max_tokens=8)


def test_two_turn_chat_both_forms_render_with_the_chat_template(backend, tokenizer):
    args = {"first": "Name a color.", "second": "Name another one."}
    a = chat_functional.run(backend=backend, temperature=0, **args)
    b = chat_with_blocks.run(backend=backend, temperature=0, **args)
    assert a.text() == b.text() and a["a2"] == b["a2"]
    msgs = a.messages()
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[1]["content"] == "Name a color." and msgs[2]["content"] == a["a1"]
    # exactly what /v1/chat/completions renders for these messages
    assert a.text() == tokenizer.apply_chat_template(msgs, tokenize=False)
    prompt_of_a2 = tokenizer.apply_chat_template(msgs[:4], tokenize=False, add_generation_prompt=True)
    assert a.text().startswith(prompt_of_a2 + a["a2"])


def test_nesting_roles_raises(backend):
    @al.program
    def nested(s):
        with s.user():
            s += al.assistant("hi")

    with pytest.raises(ProgramError, match="roles cannot nest"):
        nested.run(backend=backend)


@pytest.mark.parametrize("method", ["token_length_normalized", "greedy_token", "unconditional_likelihood_normalized"])
def test_select_methods(backend, method):
    @al.program
    def pick(s):
        s += "Q: What color is the clear daytime sky?\nA: It is"
        s += al.select("color", [" blue", " green", " a red brick wall"], method=method)

    state = pick.run(backend=backend)
    meta = state.meta("color")
    assert state["color"] in (" blue", " green", " a red brick wall")
    assert len(meta.scores) == 3 and len(meta.token_logprobs[2]) > len(meta.token_logprobs[0])
    assert state.text().endswith("It is" + state["color"])
    firsts = [lps[0] for lps in meta.token_logprobs]
    expected = {"token_length_normalized": max(range(3), key=lambda i: meta.scores[i]),
                "greedy_token": max(range(3), key=lambda i: firsts[i]),
                "unconditional_likelihood_normalized": max(range(3), key=lambda i: meta.scores[i])}[method]
    assert state["color"] == [" blue", " green", " a red brick wall"][expected]
    if method == "token_length_normalized":
        assert state["color"] == " blue"
    # gen(choices=...) is a select too
    @al.program
    def pick2(s):
        s += "Q: What color is the clear daytime sky?\nA: It is"
        s += al.gen("color", choices=[" blue", " green"])

    assert pick2.run(backend=backend)["color"] == " blue"


def test_regex_and_dtype_int(backend):
    @al.program
    def numbers(s):
        s += "A three digit number: " + al.gen("code", regex=r"[0-9]{3}", max_tokens=8)
        s += "\nHow many legs does a spider have? Answer: " + al.gen("legs", dtype=int, max_tokens=6)
        s += "\nIs water wet? Answer: " + al.gen("wet", dtype=bool, max_tokens=4)

    state = numbers.run(backend=backend, temperature=0)
    assert re.fullmatch(r"[0-9]{3}", state["code"])
    assert isinstance(state["legs"], int)
    assert isinstance(state["wet"], bool)


class City(BaseModel):
    name: str = Field(max_length=12)
    population: int = Field(ge=0, le=99999999)


def test_json_via_pydantic_and_dict_schema(backend):
    @al.program
    def extract(s):
        s += 'Rome has 2800000 inhabitants: {"name":"Rome","population":2800000}\n'
        s += "Paris has 2100000 inhabitants: "
        s += al.gen("city", json_schema=City, max_tokens=40)
        s += '\nA small number as JSON: '
        s += al.gen("raw", json_schema={"type": "object", "properties": {"n": {"type": "integer", "minimum": 0,
                                                                                "maximum": 999}},
                                        "required": ["n"], "additionalProperties": False}, max_tokens=20)

    state = extract.run(backend=backend, temperature=0)
    city = state.parsed("city")
    assert isinstance(city, City) and city.name
    raw = state.parsed("raw")
    assert isinstance(raw, dict) and isinstance(raw["n"], int)
    assert json.loads(state["city"]) == city.model_dump()


def test_fork_join_gathers_variables_and_concat_appends_in_order(backend):
    @al.program
    def tree(s):
        s += "Three ideas for a weekend:\n"
        forks = s.fork(3)
        for i, f in enumerate(forks):
            f += f"{i + 1}." + al.gen("idea", max_tokens=5, stop="\n")
        forks.join()
        s += "\nSummary:"
        parts = s.fork(2)
        for i, f in enumerate(parts):
            f += f" [part {i}]" + al.gen(max_tokens=3)
        parts.join(mode="concat")

    state = tree.run(backend=backend, temperature=0)
    ideas = state["idea"]
    assert isinstance(ideas, list) and len(ideas) == 3
    text = state.text()
    assert "Summary: [part 0]" in text and text.index("[part 0]") < text.index("[part 1]")
    assert text.startswith("Three ideas for a weekend:\n\nSummary: [part 0]")


@al.program
def storyteller(s, topic):
    s += al.user("Write one sentence about " + topic + ".")
    s += al.assistant(al.gen("story", max_tokens=12))


def test_streaming_whole_text_and_one_variable(backend):
    state = storyteller.run(topic="the sea", backend=backend, temperature=0, stream=True)
    var_deltas = list(state.text_iter("story"))
    assert len(var_deltas) > 1 and "".join(var_deltas) == state["story"]
    state.wait()
    assert "".join(state.text_iter()) == state.text()
    plain = storyteller.run(topic="the sea", backend=backend, temperature=0)
    assert plain["story"] == state["story"]
    # reading a variable of a streaming run blocks until it exists
    again = storyteller.run(topic="the sea", backend=backend, temperature=0, stream=True)
    assert again["story"] == plain["story"]


def test_async_run_stream_and_batch(backend):
    async def main():
        state = await storyteller.arun(topic="trees", backend=backend, temperature=0)
        streamed = await storyteller.arun(topic="trees", backend=backend, temperature=0, stream=True)
        deltas = [d async for d in streamed.text_async_iter("story")]
        batch = await storyteller.arun_batch([{"topic": "trees"}, {"topic": "rain"}], backend=backend,
                                             temperature=0)
        return state, "".join(deltas), batch

    state, streamed_text, batch = asyncio.run(main())
    assert streamed_text == state["story"]
    assert [b.error() for b in batch] == [None, None] and batch[0]["story"] == state["story"]


def test_run_batch_with_progress_bar(backend, capsys):
    items = [{"question": f"What is the capital of {c}?"} for c in ("France", "Poland", "Japan", "Egypt")]
    states = few_shot_qa.run_batch(items, backend=backend, num_threads="auto", progress_bar=True, temperature=0)
    assert [s.error() for s in states] == [None] * 4
    assert states[0]["answer"].strip() == "Paris" and states[2]["answer"].strip() == "Tokyo"
    assert "4/4" in capsys.readouterr().err
    assert states.prefix.startswith(FEW_SHOT) and states.cached_share > 0.5


def test_tool_use_loop(backend):
    def calculator(expression: str) -> str:
        a, op, b = re.fullmatch(r"(\d+)([+*-])(\d+)", expression).groups()
        return str({"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op])

    @al.program
    def agent(s, numbers):
        s += "Use the calculator for each step.\n"
        for n in numbers:
            s += f"Compute {n}+{n}.\nCall: "
            s += al.gen("call", regex=r"[0-9]{1,3}[+*-][0-9]{1,3}", max_tokens=8)
            s += "\nObservation: " + calculator(s["call"]) + "\n"

    state = agent.run(numbers=[2, 7, 12], backend=backend, temperature=0)
    observations = re.findall(r"Call: (\S+)\nObservation: (-?\d+)", state.text())
    assert len(observations) == 3
    for call, result in observations:
        assert calculator(call) == result
    assert state.meta().completion_tokens >= 3


def test_errors_kept_on_state_reraised_by_run_and_marked_by_run_batch(backend):
    @al.program
    def fragile(s, n):
        s += f"Count: {n}" + al.gen("x", max_tokens=2)
        if n == 2:
            raise ValueError("bad item")

    with pytest.raises(ProgramError, match="program 'fragile' failed: ValueError: bad item"):
        fragile.run(n=2, backend=backend, temperature=0)
    states = fragile.run_batch([{"n": i} for i in range(4)], backend=backend, temperature=0)
    assert states.failed == [2]
    assert isinstance(states[2].error(), ValueError) and "x" in states[2]
    assert all(states[i]["x"] is not None for i in (0, 1, 3))


def test_backend_error_names_the_call(backend):
    @al.program
    def bad_schema(s):
        s += "JSON: " + al.gen("answer", json_schema={"$ref": "http://example.com/remote.json"}, max_tokens=5)

    with pytest.raises(ProgramError) as info:
        bad_schema.run(backend=backend)
    assert re.search(r"gen 'answer': .*unsupported JSON Schema keyword '\$ref'", str(info.value.__cause__))

    @al.program
    def bad_param(s):
        s += "Hi" + al.gen("answer", max_tokens=5, top_p=3.0)

    with pytest.raises(ProgramError, match="top_p"):
        bad_param.run(backend=backend)
    # the backend keeps serving
    assert few_shot_qa.run(question="What is the capital of France?", backend=backend, temperature=0)["answer"]
