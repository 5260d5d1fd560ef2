"""`al.OpenAICompatible` against a real `arborlm serve` (its /v1 API): completions and chat, regex and
response_format, streaming, and errors that name the missing feature."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, Field

import arborlm as al
from arborlm.programs import ProgramError


@pytest.fixture(scope="module")
def openai_backend(endpoint_server):
    backend = al.OpenAICompatible(base_url=endpoint_server.url + "/v1", model="smollm2", api_key="unused")
    yield backend
    backend.close()


@al.program
def chat(s, first, second):
    s += al.system("You are a concise assistant.")
    s += al.user(first)
    s += al.assistant(al.gen("a1", max_tokens=8))
    s += al.user(second)
    s += al.assistant(al.gen("a2", max_tokens=8))


def test_chat_uses_chat_completions_and_matches_the_native_backend(openai_backend, endpoint_backend, tokenizer):
    args = {"first": "Name a color.", "second": "Name another one."}
    via_openai = chat.run(backend=openai_backend, temperature=0, **args)
    native = chat.run(backend=endpoint_backend, temperature=0, **args)
    assert via_openai["a1"] == native["a1"] and via_openai["a2"] == native["a2"]
    assert via_openai.text() == tokenizer.apply_chat_template(via_openai.messages(), tokenize=False)
    assert via_openai.meta("a2").prompt_tokens > via_openai.meta("a1").prompt_tokens > 0


def test_completions_regex_json_and_stream(openai_backend):
    class Item(BaseModel):
        name: str = Field(max_length=10)
        price: int = Field(ge=0, le=999)

    @al.program
    def mixed(s):
        s += ("Q: What is the capital of Italy?\nA: Rome\nQ: What is the capital of Spain?\nA: Madrid\n"
              "Q: What is the capital of Germany?\nA: Berlin\nQ: What is the capital of France?\nA:")
        s += al.gen("capital", max_tokens=4, stop="\n")
        s += "\nA year: " + al.gen("year", regex=r"(19|20)[0-9]{2}", max_tokens=6)
        s += '\nAn apple costs 3 dollars: {"name":"apple","price":3}\nA pear costs 4 dollars: '
        s += al.gen("item", json_schema=Item, max_tokens=24)

    state = mixed.run(backend=openai_backend, temperature=0)
    assert state["capital"].strip() == "Paris"
    assert re.fullmatch(r"(19|20)[0-9]{2}", state["year"])
    assert isinstance(state.parsed("item"), Item)
    streamed = chat.run(first="Name a fruit.", second="And a vegetable?", backend=openai_backend,
                        temperature=0, stream=True)
    assert "".join(streamed.text_iter("a2")) == streamed["a2"]
    assert streamed.wait().error() is None


def test_errors_name_the_call_and_the_feature(openai_backend):
    @al.program
    def pick(s):
        s += "The sky is" + al.select("c", [" blue", " green"])

    with pytest.raises(ProgramError) as info:
        pick.run(backend=openai_backend)
    assert re.search(r"select 'c': select needs prompt logprobs \(echo \+ logprobs", str(info.value.__cause__))

    @al.program
    def bad(s):
        s += "JSON: " + al.gen("answer", json_schema={"$ref": "http://example.com/x.json"}, max_tokens=4)

    with pytest.raises(ProgramError) as info:
        bad.run(backend=openai_backend)
    assert "gen 'answer': " in str(info.value.__cause__) and "unsupported JSON Schema keyword" in str(
        info.value.__cause__)

    @al.program
    def unknown(s):
        s += "x" + al.gen("answer", max_tokens=2)

    with pytest.raises(ProgramError) as info:
        unknown.run(backend=openai_backend, jump_forward=False)
    assert "cannot send the sampling parameter 'jump_forward'" in str(info.value.__cause__)
