from __future__ import annotations

import pytest
from grammar_oracle import accepts

from arborlm.constrain import GrammarError


def test_kinds_compile_and_record_time(compiler):
    g = compiler.compile_sync("choice", ["yes", "no", "a.b"])
    assert g.regex == r"(yes|no|a\.b)" and g.compile_ms >= 0
    assert compiler.compile("choice", ["yes", "no", "a.b"]).result() is g  # cached
    s = compiler.compile_sync("json_schema", '{"type": "integer", "minimum": 3}')
    assert compiler.compile_sync("json_schema", {"minimum": 3, "type": "integer"}) is s  # canonical key
    assert accepts(compiler, s, "17") and not accepts(compiler, s, "2")


def test_pydantic_model(compiler):
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str
        age: int

    g = compiler.compile_sync("json_schema", Person)
    assert accepts(compiler, g, '{"name":"Ann","age":3}')


def test_failures_are_cached_and_clear(compiler):
    f1 = compiler.compile("regex", "a(b")
    with pytest.raises(GrammarError, match="invalid regex"):
        f1.result()
    assert compiler.compile("regex", "a(b") is f1
    with pytest.raises(GrammarError, match="unsupported JSON Schema keyword 'uniqueItems' at \\$.properties.tags"):
        compiler.compile_sync("json_schema", {"type": "object", "properties": {
            "tags": {"type": "array", "uniqueItems": True, "minItems": 2}}})
    with pytest.raises(GrammarError, match="unknown grammar kind"):
        compiler.compile_sync("cfg", "x")
    with pytest.raises(GrammarError, match="not valid JSON"):
        compiler.compile_sync("json_schema", "{nope")
    with pytest.raises(GrammarError):
        compiler.compile_sync("choice", [])


def test_ebnf_needs_llguidance_and_invalid_grammars_are_named(compiler):
    if compiler.backend == "outlines":
        with pytest.raises(GrammarError, match="ebnf grammars need grammar_backend='llguidance'"):
            compiler.compile_sync("ebnf", 'start: "a"')
        return
    g = compiler.compile_sync("ebnf", 'start: "a" | "b"')
    m = g.matcher()
    assert m.try_advance(compiler.tokenizer.encode("a", add_special_tokens=False)[0]) and m.is_terminated()
    with pytest.raises(GrammarError, match="llguidance error in the ebnf grammar"):
        compiler.compile_sync("ebnf", "start: undefined_rule")


def test_user_regex_checked_up_front(compiler):
    with pytest.raises(GrammarError, match=r"lookaround '\(\?='\.\.\. at position 1"):
        compiler.compile_sync("regex", "a(?=b)")
    with pytest.raises(GrammarError, match="position 3 .* Group references"):
        compiler.compile_sync("regex", r"(a)\1")
    with pytest.raises(GrammarError, match="position 0 .*'\\^'"):
        compiler.compile_sync("regex", "^abc")


def test_number_digits_in_key_and_regex(compiler):
    bounded = compiler.compile_sync("json_schema", {"type": "integer"})
    free = compiler.compile_sync("json_schema", {"type": "integer"}, number_digits=0)
    assert bounded is not free
    assert accepts(compiler, bounded, "9" * 15) and not accepts(compiler, bounded, "1" + "0" * 15)
    assert accepts(compiler, free, "1" + "0" * 40)
    with pytest.raises(GrammarError, match="json_number_digits=-1 is invalid"):
        compiler.compile_sync("json_schema", {"type": "integer"}, number_digits=-1)
