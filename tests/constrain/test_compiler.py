from __future__ import annotations

import re

import pytest

from arborlm.constrain import GrammarError


def test_kinds_compile_and_record_time(compiler):
    g = compiler.compile_sync("choice", ["yes", "no", "a.b"])
    assert g.regex == r"(yes|no|a\.b)" and g.compile_ms >= 0
    assert compiler.compile("choice", ["yes", "no", "a.b"]).result() is g  # cached
    s = compiler.compile_sync("json_schema", '{"type": "integer", "minimum": 3}')
    assert compiler.compile_sync("json_schema", {"minimum": 3, "type": "integer"}) is s  # canonical key
    assert re.fullmatch(s.regex, "17") and not re.fullmatch(s.regex, "2")


def test_pydantic_model(compiler):
    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str
        age: int

    g = compiler.compile_sync("json_schema", Person)
    assert re.fullmatch(g.regex, '{"name":"Ann","age":3}')


def test_failures_are_cached_and_clear(compiler):
    f1 = compiler.compile("regex", "a(b")
    with pytest.raises(GrammarError, match="invalid regex"):
        f1.result()
    assert compiler.compile("regex", "a(b") is f1
    with pytest.raises(GrammarError, match="unsupported JSON Schema keyword 'uniqueItems' at \\$.properties.tags"):
        compiler.compile_sync("json_schema", {"type": "object", "properties": {
            "tags": {"type": "array", "uniqueItems": True, "minItems": 2}}})
    with pytest.raises(GrammarError, match="unknown grammar kind"):
        compiler.compile_sync("ebnf", "x")
    with pytest.raises(GrammarError, match="not valid JSON"):
        compiler.compile_sync("json_schema", "{nope")
    with pytest.raises(GrammarError):
        compiler.compile_sync("choice", [])
