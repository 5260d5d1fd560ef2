from __future__ import annotations

import json

import pytest
from grammar_oracle import accepts

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "house": {"enum": ["Gryffindor", "Slytherin", "Ravenclaw"]},
    "age": {"type": "integer", "minimum": 0}, "wand": {"type": "object", "properties": {
        "wood": {"type": "string"}, "length": {"type": "number"}}, "required": ["wood", "length"]}},
    "required": ["name", "house", "age", "wand"]}
TARGET = {"name": "Hermione Grånger", "house": "Gryffindor", "age": 19, "wand": {"wood": "vine", "length": 10.75}}


def scripted_decode(g, tokenizer, target: str, use_draft: bool):
    """A deterministic "model": at each position the allowed token that is the longest prefix of the
    remaining target text. With drafts, one "pass" verifies a whole draft the way the scheduler
    does: accept while the model's choice equals the draft token, then take the model's own token.
    Returns (output ids, number of passes)."""
    vocab = g.vocab
    m = g.matcher()
    out: list[int] = []

    def choose() -> int | None:
        rest = target.encode()[len(b"".join(vocab.token_bytes[t] for t in out)):]
        if not rest:
            return None
        return max((t for t in m.allowed_tokens() if t != g.eos_token_id and rest.startswith(vocab.token_bytes[t])),
                   key=lambda t: len(vocab.token_bytes[t]))

    for passes in range(1, 400):
        draft = m.propose_draft(tokenizer, 64) if use_draft else []
        state = (m.num_tokens, m.forced_text(), m.allowed_tokens())
        if draft:
            assert (m.num_tokens, m.forced_text(), m.allowed_tokens()) == state  # proposing never moves the matcher
        for d in [*draft, None]:
            t = choose()
            if t is None:
                assert m.is_accepting()
                return out, passes
            m.advance(t)
            out.append(t)
            if t != d:
                break
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


def test_drafts_reach_same_tokens_with_fewer_passes(compiler, tokenizer):
    g = compiler.compile_sync("json_schema", SCHEMA)
    target = json.dumps(TARGET, separators=(",", ":"), ensure_ascii=False)
    assert accepts(compiler, g, target)
    plain, plain_passes = scripted_decode(g, tokenizer, target, use_draft=False)
    drafted, passes = scripted_decode(g, tokenizer, target, use_draft=True)
    assert drafted == plain and tokenizer.decode(plain) == target
    assert passes <= plain_passes - 8


def test_draft_is_cut_to_the_limit_and_to_what_the_grammar_allows(compiler, tokenizer):
    g = compiler.compile_sync("json_schema", SCHEMA)
    m = g.matcher()
    full = m.propose_draft(tokenizer, 64)
    # outlines drafts the whole forced text; llguidance stops before a last token that a longer
    # token could still extend (its fast-forward tokens): a non-empty prefix either way.
    want = '{"name":"' if compiler.backend == "outlines" else '{"name'
    assert tokenizer.decode(full) == want
    assert m.propose_draft(tokenizer, 1) == full[:1]
    assert m.propose_draft(tokenizer, 0) == []
    for t in tokenizer.encode('{"name":"Ron"', add_special_tokens=False):
        m.advance(t)
    assert tokenizer.decode(m.propose_draft(tokenizer, 64)) == ',"house":"'
    assert g.matcher().copy().propose_draft(tokenizer, 64) == full
    assert compiler.compile_sync("choice", ["yes", "no"]).matcher().propose_draft(tokenizer, 64) == []


@pytest.mark.parametrize("regex,text", [
    (r"The answer is (yes|no)\.", "The answer is no."),
    (r"Name: [A-Z][a-z]+, Age: [0-9]+", "Name: Ada, Age: 36"),
    (r"\{\"ok\":(true|false)\}", '{"ok":true}'),
])
def test_jump_forward_regexes(compiler, tokenizer, regex, text):
    g = compiler.compile_sync("regex", regex)
    ids, passes = scripted_decode(g, tokenizer, text, use_draft=True)
    plain, plain_passes = scripted_decode(g, tokenizer, text, use_draft=False)
    assert ids == plain and tokenizer.decode(ids) == text
    assert passes < plain_passes
