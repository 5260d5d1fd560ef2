"""schema_lark.py: the llguidance engine's JSON-schema grammar (Lark rules over the flat regex's
leaves) accepts exactly what the flat regex of the same schema accepts, on texts chosen at the
rules' edges: optional properties present or absent in every combination, array counts around
minItems/maxItems, union branches, and a union whose leaf branch starts like a rule branch (the
greedy-lexeme hazard, rendered as one terminal)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
from grammar_oracle import accepts

from arborlm.constrain import GrammarCompiler
from arborlm.constrain.schema_lark import lark_regex, schema_to_lark

OBJ = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 3},
                                        "c": {"type": "boolean"}, "d": {"enum": ["x", "y"]}},
       "required": ["b"], "additionalProperties": False}
ARRAY = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2, "maxItems": 4}
UNION = {"anyOf": [OBJ, {"type": "null"}, {"type": "array", "items": {"type": "boolean"}, "maxItems": 1}]}
HAZARD = {"anyOf": [{"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"],
                     "additionalProperties": False}, {"type": "object"}]}
FREE = {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}, "maxItems": 2}}


def _object_texts() -> list[str]:
    values = {"a": "-12", "b": '"xy"', "c": "true", "d": '"y"'}
    texts = []
    for n in range(5):
        for keys in itertools.permutations("abcd", n):
            texts.append("{" + ",".join(f'"{k}":{values[k]}' for k in keys) + "}")
    return texts + ['{"b":"toolong"}', '{"b":"x","e":1}', '{"b":"x",}', '{,"b":"x"}']


CASES = {
    "object": (OBJ, _object_texts()),
    "array": (ARRAY, ["[" + ",".join("1" * n) + "]" for n in range(6)] + ["[1,10]", "[1,,2]", "[]"]),
    "union": (UNION, ['{"b":"q"}', "null", "[]", "[true]", "[true,false]", '{"a":1}', "true"]),
    "hazard": (HAZARD, ['{"k":1}', '{"k":"s"}', '{"z":[1,{"q":null}]}', "{}", '{"k":1,"k":2}', "[]", '{"k":1']),
    "free-object": (FREE, ["{}", '{"x":[]}', '{"x":[1,2],"y":[3]}', '{"x":[1,2,3]}', '{"x":1}']),
}


@pytest.fixture(scope="module")
def ll_compiler(tokenizer):
    c = GrammarCompiler(tokenizer, num_threads=1, backend="llguidance")
    yield c
    c.shutdown()


@pytest.mark.parametrize("name", sorted(CASES))
def test_rules_accept_what_the_flat_regex_accepts(ll_compiler, name: str) -> None:
    schema, texts = CASES[name]
    syntax, _ = ll_compiler.grammar_source("json_schema", schema)
    assert syntax == "lark"
    grammar = ll_compiler.compile_sync("json_schema", schema)
    flat = re.compile(ll_compiler.to_regex("json_schema", schema))
    verdicts = {t: accepts(ll_compiler, grammar, t) for t in texts}
    assert verdicts == {t: flat.fullmatch(t) is not None for t in texts}
    assert any(verdicts.values()) and not all(verdicts.values())


def test_objects_are_rules_and_linear_in_size() -> None:
    """200 optional properties: the flat regex lists which one comes first (quadratic); the rules
    grow by a fixed amount per property."""
    def schema(n: int) -> dict:
        return {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(n)}}

    small, big = len(schema_to_lark(schema(100))), len(schema_to_lark(schema(200)))
    assert big < 2.2 * small
    grammar = schema_to_lark(schema(3))
    assert grammar.startswith("start: r") and '"{"' in grammar  # an object rule, not one terminal


def test_union_hazard_becomes_one_terminal() -> None:
    grammar = schema_to_lark(HAZARD)
    assert grammar.startswith("start: T")  # the whole union is one regex terminal
    assert schema_to_lark(UNION).startswith("start: r")


def test_lark_regex_escapes_slashes_and_control_characters() -> None:
    assert lark_regex("a/b") == r"/a\/b/"
    assert lark_regex(r"a\/b") == r"/a\/b/"  # already escaped
    assert lark_regex(r'["\\/]') == r'/["\\\/]/'  # an escaped backslash, then a bare slash
    assert lark_regex("x\ny") == r"/x\x0Ay/"
    assert json.loads('"' + lark_regex("\t")[1:-1].replace("\\x09", "\\t") + '"') == "\t"
