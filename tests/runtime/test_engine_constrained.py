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


@pytest.fixture(scope="module", params=["outlines", "llguidance"])
def engine(request, smollm2_path: str):
    """The same tests on both grammar engines."""
    eng = Engine(model=smollm2_path, dtype="float32", max_total_tokens=8192, max_running_requests=32,
                 grammar_backend=request.param)
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


CARD_NAMES = ["Harry Potter", "Luna Lovegood", "Severus Snape", "Albus Dumbledore", "Draco Malfoy", "Rubeus Hagrid"]


def _on_off(engine: Engine, prompts: list[str], params: dict) -> tuple[list[dict], list[dict]]:
    off = engine.generate(prompts, {**params, "jump_forward": False})
    engine.flush_cache()
    on = engine.generate(prompts, {**params, "jump_forward": True})
    engine.flush_cache()
    return off, on


def test_jump_forward_greedy_identical_with_fewer_passes(engine: Engine) -> None:
    """Speculative jump-forward: forced text is a draft the model verifies, so greedy output is
    token-identical to decoding without it, and every accepted draft token saves a forward pass."""
    prompts = [chat(engine.tokenizer, f"Give a JSON card for {n}.") for n in CARD_NAMES]
    off, on = _on_off(engine, prompts, {"json_schema": PERSON, "temperature": 0.0, "max_new_tokens": 128})
    for a, b in zip(off, on):
        assert b["output_ids"] == a["output_ids"]
        jsonschema.validate(json.loads(b["text"]), PERSON)
        assert b["meta"]["finish_reason"] == a["meta"]["finish_reason"]
    accepted = sum(o["meta"]["jump_forward_tokens"] for o in on)
    assert accepted > 0
    passes_on = sum(o["meta"]["num_forward_passes"] for o in on)
    passes_off = sum(o["meta"]["num_forward_passes"] for o in off)
    # each accepted draft token replaces one decode pass, except a final accepted draft token that
    # ends the request (the verify pass then earns no token after it): at most one per request
    assert passes_off - accepted <= passes_on <= passes_off - accepted + len(prompts)
    assert passes_on < 0.85 * passes_off


def test_jump_forward_seeded_sampling_and_logprobs_identical(engine: Engine) -> None:
    """Each draft position is sampled like plain decoding (same seed step, penalties, mask), so
    seeded sampling and the reported logprobs do not change either."""
    prompts = [chat(engine.tokenizer, f"Give a JSON card for {n}.") for n in CARD_NAMES[:4]]
    params = {"json_schema": PERSON, "temperature": 0.9, "seed": 5, "max_new_tokens": 96,
              "frequency_penalty": 0.3, "return_logprob": True, "top_logprobs_num": 2}
    off, on = _on_off(engine, prompts, params)
    for a, b in zip(off, on):
        assert b["output_ids"] == a["output_ids"]
        lp_a, lp_b = a["meta"]["output_logprobs"], b["meta"]["output_logprobs"]
        assert len(lp_b) == len(b["output_ids"]) and all(x is not None for x in lp_b)
        assert lp_b == pytest.approx(lp_a, abs=1e-3)
    assert sum(o["meta"]["jump_forward_tokens"] for o in on) > 0


@pytest.mark.parametrize("extra", [{"stop": ['"city"']}, {"max_new_tokens": 9}])
def test_jump_forward_stops_inside_a_draft_like_plain_decoding(engine: Engine, extra: dict) -> None:
    """A stop string or the token limit that falls inside forced text ends the request at the same
    token as without jump-forward (the rest of the draft is dropped, its K/V freed)."""
    prompts = [chat(engine.tokenizer, f"Give a JSON card for {n}.") for n in CARD_NAMES[:3]]
    off, on = _on_off(engine, prompts, {"json_schema": PERSON, "temperature": 0.0, "max_new_tokens": 128, **extra})
    for a, b in zip(off, on):
        assert (b["text"], b["output_ids"], b["meta"]["finish_reason"]) == (a["text"], a["output_ids"], a["meta"]["finish_reason"])
        assert b["meta"]["finish_reason"]["type"] == ("stop" if "stop" in extra else "length")


def test_jump_forward_survives_retraction(smollm2_path: str) -> None:
    """With a KV pool too small for the batch, requests holding drafts are retracted and resumed;
    outputs still equal a roomy pool's without jump-forward."""
    prompts = None
    results = []
    for total, jf in ((8192, False), (200, True)):
        eng = Engine(model=smollm2_path, dtype="float32", max_total_tokens=total, max_running_requests=16)
        try:
            prompts = prompts or [chat(eng.tokenizer, f"Give a JSON card for {n}.") for n in CARD_NAMES]
            results.append(eng.generate(prompts, {"json_schema": PERSON, "temperature": 0.0, "max_new_tokens": 80,
                                                  "jump_forward": jf}))
            stats = eng.scheduler.stats()
            if jf:
                assert sum(o["meta"]["num_retractions"] for o in results[-1]) > 0
            assert_kv_baseline(eng)
            assert stats["num_running"] == 0
        finally:
            eng.shutdown()
    assert [o["output_ids"] for o in results[1]] == [o["output_ids"] for o in results[0]]


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
