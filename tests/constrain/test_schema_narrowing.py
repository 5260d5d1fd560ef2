"""Sound narrowings (the table in constrain/schema.py): the FSM accepts a subset of the valid
instances. For each, every candidate text the regex accepts must validate (jsonschema), and the
listed texts must be accepted (the narrowing keeps something useful)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from arborlm.constrain import schema_to_regex

OBJ = ['{}', '{"a":1}', '{"a":1,"b":2}', '{"a":1,"b":2,"c":3}', '{"x1":1}', '{"x1":"s"}', '{"ab":1}',
       '{"abcd":1}', '{"next":"n"}', '{"previous":"p"}', '{"next":"n","previous":"p"}',
       '{"type":"a"}', '{"type":"b"}', '{"type":"a","v":1}', '{"v":1}']
ARR = ['[]', '[1]', '[1,1]', '[1,2]', '[2,1]', '["a"]', '["a","a"]', '["a","b"]', '["b","a"]', '[true,false]',
       '[false,true]', '[true,true]', '["type"]', '["x","type"]', '["type","x"]', '["type","type","x"]']
STR = ['""', '"a"', '"ab"', '"abc"', '"abcd"', '"abcdef"', '"1.2"', '"1"', '"1.2.3"', '"linux"', '"lin"',
       '"xbx"', '"bbbb"', '"a b"', '"a\\u0020b"', '"a\\nb"']

CASES = [
    # uniqueItems: at most one item; small scalar enums: distinct values in enum order
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, ['[]', '["a"]']),
    ({"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": True}, ['[]', '["a","b"]', '["b"]']),
    ({"type": "array", "items": {"type": "boolean"}, "uniqueItems": True, "minItems": 1}, ['[false,true]']),
    ({"type": "array", "prefixItems": [{"const": 1}, {"const": 2}], "uniqueItems": True}, ['[1,2]']),
    # contains: the first item satisfies it
    ({"type": "array", "contains": {"const": "type"}, "items": {"enum": ["type", "x"]}},
     ['["type"]', '["type","x"]']),
    # patternProperties / propertyNames / min/maxProperties on objects without declared properties
    ({"type": "object", "patternProperties": {"^x[0-9]$": {"type": "integer"}}, "additionalProperties": False},
     ['{}', '{"x1":1}']),
    ({"type": "object", "propertyNames": {"maxLength": 2}, "additionalProperties": {"type": "integer"}},
     ['{"a":1}', '{"ab":1}']),
    ({"type": "object", "minProperties": 1}, ['{"a":1}']),
    ({"type": "object", "maxProperties": 1, "additionalProperties": {"type": "integer"}}, ['{}', '{"a":1}']),
    # minProperties / maxProperties with declared properties
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "minProperties": 1},
     ['{"a":1}', '{"a":1,"b":2}']),
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                                       "c": {"type": "integer"}}, "maxProperties": 2}, ['{"a":1,"b":2}']),
    # a length limit next to a pattern / format
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}, ['"a"', '"abc"']),
    ({"type": "string", "pattern": "b", "minLength": 3, "maxLength": 4}, ['"bbbb"']),
    ({"type": "string", "pattern": "^(\\d+.)?(\\d+.)?(\\d+)?$", "minLength": 1}, ['"1.2"', '"1.2.3"']),
    ({"type": "string", "format": "date", "maxLength": 10}, []),
    ({"type": "string", "pattern": "^a\\sb$"}, ['"a b"']),
    # overlapping oneOf: branches narrowed until exclusive, the rest not emitted
    ({"oneOf": [{"additionalProperties": False, "properties": {"next": {"type": "string"}}},
                {"additionalProperties": False, "properties": {"previous": {"type": "string"}}}]},
     ['{"next":"n"}', '{"previous":"p"}']),
    ({"type": "object", "oneOf": [{"properties": {"type": {"enum": ["a"]}}}, {"properties": {"type": {"enum": ["b"]}},
                                                                                 "v": {"type": "integer"}}]},
     ['{"type":"a"}', '{"type":"b"}']),
    ({"type": "string", "oneOf": [{"enum": ["linux"]}, {}]}, ['"lin"', '"abc"']),
    ({"oneOf": [{"enum": ["linux"]}, {"type": "string"}]}, ['"a"']),
    # an unknown format is an annotation
    ({"type": "string", "format": "x-custom"}, ['"a"', '""']),
]


@pytest.mark.parametrize("schema,must_accept", CASES, ids=[str(i) for i in range(len(CASES))])
def test_narrowing_is_sound_and_useful(schema, must_accept):
    rx = re.compile(schema_to_regex(schema))
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for text in OBJ + ARR + STR:
        if rx.fullmatch(text):
            assert v.is_valid(json.loads(text)), (schema, text)
    for text in must_accept:
        assert rx.fullmatch(text), (schema, text)
    assert not rx.fullmatch('"linux"') or "linux" not in json.dumps(schema)


def test_whitespace_pattern_reaches_our_container_regexes():
    rx = re.compile(schema_to_regex({"type": "object", "minProperties": 1}, whitespace_pattern="[ ]?"))
    assert rx.fullmatch('{ "a" : 1 }')
