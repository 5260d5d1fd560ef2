"""Constrained generation through the Engine on the default model: regex outputs fullmatch, JSON
outputs validate, jump-forward keeps greedy output and saves forward passes, bad grammars fail
only their request with a message naming the problem."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from kv_check import assert_kv_baseline

from arborlm.runtime import Engine


def chat(tok, text: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


@pytest.fixture(scope="module")
def engine(smollm2_path: str):
    eng = Engine(model=smollm2_path, dtype="float32", max_total_tokens=8192, max_running_requests=32)
    yield eng
    eng.shutdown()


@pytest.fixture(autouse=True)
def back_to_baseline(engine: Engine):
    yield
    assert_kv_baseline(engine)


REGEXES = {
    "ipv4": (r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
             "What is the IP address of the Google DNS server?"),
    "iso_date": (r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])", "When did the Apollo 11 moon landing happen?"),
    "email": (r"[a-z0-9._]{1,20}@[a-z0-9]{1,15}\.(com|org|net)", "Give the contact email of a bakery."),
    "enum": (r"(red|green|blue)", "What color is the sky?"),
    "phone": (r"\(\d{3}\) \d{3}-\d{4}", "Give an example US phone number."),
}


def test_regex_outputs_fullmatch(engine: Engine) -> None:
    names = list(REGEXES)
    prompts = [chat(engine.tokenizer, REGEXES[n][1]) for n in names]
    for temperature in (0.0, 0.9):
        outs = engine.generate(prompts, [{"regex": REGEXES[n][0], "temperature": temperature, "seed": 3,
                                          "max_new_tokens": 40} for n in names])
        for n, o in zip(names, outs):
            assert o["meta"]["finish_reason"]["type"] == "stop", (n, o)
            assert re.fullmatch(REGEXES[n][0], o["text"]), (n, o["text"])


def test_choices(engine: Engine) -> None:
    choices = ["Paris", "London", "Berlin", "Madrid"]
    out = engine.generate(chat(engine.tokenizer, "What is the capital of France?"),
                          {"choices": choices, "temperature": 0})
    assert out["text"] in choices


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"enum": ["Paris", "Tokyo", "Lima"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "city"],
}


def test_json_schema_outputs_validate(engine: Engine) -> None:
    prompts = [chat(engine.tokenizer, f"Describe person number {i} as JSON.") for i in range(6)]
    outs = engine.generate(prompts, {"json_schema": PERSON, "temperature": 0.8, "seed": 11, "max_new_tokens": 128})
    for o in outs:
        if o["meta"]["finish_reason"]["type"] == "stop":
            jsonschema.validate(json.loads(o["text"]), PERSON)
    assert sum(o["meta"]["finish_reason"]["type"] == "stop" for o in outs) >= 4


def test_jump_forward_valid_fewer_passes_mostly_same(engine: Engine) -> None:
    """Jump-forward appends forced text without a forward per token. Its greedy output can differ
    from decoding without it (the model's token history differs at forced boundaries), which is why
    it is off by default; this measures that rate and keeps it from regressing."""
    names = ["Harry Potter", "Luna Lovegood", "Severus Snape", "Albus Dumbledore", "Draco Malfoy", "Rubeus Hagrid"]
    prompts = [chat(engine.tokenizer, f"Give a JSON card for {n}.") for n in names]
    base = {"json_schema": PERSON, "temperature": 0.0, "max_new_tokens": 128}
    off = engine.generate(prompts, {**base, "jump_forward": False})
    engine.flush_cache()
    on = engine.generate(prompts, {**base, "jump_forward": True})
    for o in on:
        jsonschema.validate(json.loads(o["text"]), PERSON)
    same = sum(a["text"] == b["text"] for a, b in zip(off, on))
    print(f"jump-forward greedy-identical: {same}/{len(prompts)}")
    assert same >= len(prompts) // 2
    assert sum(o["meta"]["jump_forward_tokens"] for o in on) > 0
    passes_on = sum(o["meta"]["num_forward_passes"] for o in on)
    passes_off = sum(o["meta"]["num_forward_passes"] for o in off)
    assert passes_on < 0.7 * passes_off


def test_streaming_with_jump_forward_equals_text(engine: Engine) -> None:
    prompt = chat(engine.tokenizer, "Give a JSON card for Hermione Granger.")
    params = {"json_schema": PERSON, "temperature": 0.0, "max_new_tokens": 128, "jump_forward": True}
    text = engine.generate(prompt, params)["text"]
    assert "".join(engine.stream(prompt, params)) == text


def test_bad_grammars_fail_only_their_request(engine: Engine) -> None:
    with pytest.raises(ValueError, match="multipleOf"):
        engine.generate("x", {"json_schema": {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}}})
    with pytest.raises(ValueError):
        engine.generate("x", {"regex": "(unclosed"})
    # a good request runs fine afterwards, including in the same batch as a failing one
    ok = engine.generate(chat(engine.tokenizer, "Pick a color."), {"regex": "(red|blue)", "temperature": 0})
    assert ok["text"] in ("red", "blue")
