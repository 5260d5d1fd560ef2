from __future__ import annotations

import json
import re

import pytest

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "house": {"enum": ["Gryffindor", "Slytherin", "Ravenclaw"]},
    "age": {"type": "integer", "minimum": 0}, "wand": {"type": "object", "properties": {
        "wood": {"type": "string"}, "length": {"type": "number"}}, "required": ["wood", "length"]}},
    "required": ["name", "house", "age", "wand"]}
TARGET = {"name": "Hermione Grånger", "house": "Gryffindor", "age": 19, "wand": {"wood": "vine", "length": 10.75}}


def scripted_decode(g, tokenizer, target: str, use_jump: bool, max_retokenize: int = 0):
    """A deterministic "model": at each step the allowed token that is the longest prefix of the
    remaining target text. Returns (output ids, number of jump-forward calls that fired)."""
    vocab = g.vocab
    m = g.matcher()
    out: list[int] = []
    jumps = 0
    for _ in range(400):
        if use_jump:
            r = m.jump_forward(out, tokenizer, max_retokenize)
            if r is not None:
                k, new = r
                out = out[: len(out) - k] + new
                jumps += 1
                assert m._tokens == out  # matcher state tracks the edited output exactly
        text = b"".join(vocab.token_bytes[t] for t in out)
        rest = target.encode()[len(text):]
        assert target.encode().startswith(text)
        if not rest:
            assert m.is_accepting()
            m.advance(g.eos_token_id)
            return out, jumps
        best = max((t for t in m.allowed_tokens() if t != g.eos_token_id and rest.startswith(vocab.token_bytes[t])),
                   key=lambda t: len(vocab.token_bytes[t]))
        m.advance(best)
        out.append(best)
    raise AssertionError("did not finish")


def test_forced_text(compiler, tokenizer):
    g = compiler.compile_sync("json_schema", SCHEMA)
    m = g.matcher()
    assert m.forced_text() == '{"name":"'
    for t in tokenizer.encode('{"name":"Ron"', add_special_tokens=False):
        m.advance(t)
    assert m.forced_text() == ',"house":"'
    for t in tokenizer.encode(',"house":"S', add_special_tokens=False):
        m.advance(t)
    assert m.forced_text() == 'lytherin","age":'
    assert g.matcher().copy().forced_text() == '{"name":"'
    choice = compiler.compile_sync("choice", ["yes", "no"])
    assert choice.matcher().forced_text() == ""


@pytest.mark.parametrize("max_retokenize", [0, 4])
def test_jump_forward_reaches_same_text_with_fewer_steps(compiler, tokenizer, max_retokenize):
    g = compiler.compile_sync("json_schema", SCHEMA)
    target = json.dumps(TARGET, separators=(",", ":"), ensure_ascii=False)
    assert re.fullmatch(g.regex, target)
    plain, _ = scripted_decode(g, tokenizer, target, use_jump=False)
    jumped, jumps = scripted_decode(g, tokenizer, target, use_jump=True, max_retokenize=max_retokenize)
    assert tokenizer.decode(plain) == tokenizer.decode(jumped) == target
    assert jumps >= 4


@pytest.mark.parametrize("regex,text", [
    (r"The answer is (yes|no)\.", "The answer is no."),
    (r"Name: [A-Z][a-z]+, Age: [0-9]+", "Name: Ada, Age: 36"),
    (r"\{\"ok\":(true|false)\}", '{"ok":true}'),
])
def test_jump_forward_regexes(compiler, tokenizer, regex, text):
    g = compiler.compile_sync("regex", regex)
    ids, _ = scripted_decode(g, tokenizer, text, use_jump=True)
    assert tokenizer.decode(ids) == text
