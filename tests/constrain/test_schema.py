"""Honest schemas: unsupported keywords are named with their JSON path; normalisations are exact."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from arborlm.constrain import UnsupportedSchema, schema_to_regex

REJECT = [
    ({"type": "object", "patternProperties": {"(?=x)": {"type": "integer"}}}, "patternProperties", "$"),
    ({"properties": {"foo": {"type": "object", "patternProperties": {"a": {}}, "propertyNames": {"maxLength": 3}}}},
     "propertyNames", "$.properties.foo"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True, "minItems": 2}, "uniqueItems", "$"),
    ({"type": "array", "contains": {"type": "integer"}, "minContains": 2}, "contains", "$"),
    ({"type": "number", "multipleOf": 0.5}, "multipleOf", "$"),
    ({"type": "integer", "multipleOf": 3}, "multipleOf", "$"),
    ({"if": {"type": "string"}, "then": {"minLength": 1}}, "if", "$"),
    ({"not": {"enum": [1]}}, "not", "$"),
    ({"type": "object", "minProperties": 2}, "minProperties", "$"),
    ({"type": "object", "properties": {"a": {}}, "minProperties": 2}, "minProperties", "$"),
    ({"type": "object", "properties": {"a": {}, "b": {}}, "dependentSchemas": {"a": {"required": ["b"]}}},
     "dependentSchemas", "$"),
    ({"type": "string", "format": "date", "pattern": "^2"}, "pattern", "$"),
    ({"type": "string", "pattern": "^abcd$", "maxLength": 3}, "maxLength", "$"),
    ({"type": "string", "pattern": "(?=a)b"}, "pattern", "$"),
    ({"oneOf": [{"type": "number"}, {"type": "integer"}]}, "oneOf", "$"),
    ({"items": [{"$ref": "http://example.com/x.json"}]}, "$ref", "$.prefixItems[0]"),
    ({"$dynamicRef": "#x"}, "$dynamicRef", "$"),
    ({"type": "array", "items": {"type": "object", "properties": {"a": {"unevaluatedItems": False,
                                                                         "type": "array"}}}},
     "unevaluatedItems", "$.items.properties.a"),
]


@pytest.mark.parametrize("schema,keyword,path", REJECT, ids=[f"{k}@{p}" for _, k, p in REJECT])
def test_unsupported_keyword_is_named_with_path(schema, keyword, path):
    with pytest.raises(UnsupportedSchema) as ei:
        schema_to_regex(schema)
    assert f"unsupported JSON Schema keyword '{keyword}' at {path}" in str(ei.value)


def _check_exact(schema, instances):
    """Regex acceptance == jsonschema validity for the given (compact) instances."""
    rx = re.compile(schema_to_regex(schema))
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for x in instances:
        text = json.dumps(x, separators=(",", ":"))
        assert (rx.fullmatch(text) is not None) == v.is_valid(x), (schema, text)


NORMALISED = [
    ({"not": {"not": {"type": "integer"}}}, [1, "a", None, 2.5]),
    ({"type": ["string", "integer", "null"], "not": {"type": "string"}}, [1, "a", None]),
    ({"type": "object", "properties": {"a": True, "b": False}, "required": ["a"]},
     [{"a": 1}, {"a": "x"}, {"a": 1, "b": 2}, {}]),
    ({"$defs": {"pos": {"type": "integer", "minimum": 1}}, "type": "array", "items": {"$ref": "#/$defs/pos"}},
     [[1, 2], [0], [], [-3]]),
    ({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "maximum": 5}, [5, 6, -100]),
    ({"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
     [{"a": 1, "b": "x"}, {"a": 1}, {"b": "x"}]),
    ({"type": "integer", "minimum": -15, "exclusiveMaximum": 120}, [-16, -15, 0, 119, 120, 7]),
    ({"type": "number", "minimum": 0, "maximum": 1}, [0, 0.5, 1, 1.0, 1.5, -0.1]),
    ({"type": "string", "format": "date"}, ["2024-01-31", "2024-13-01", "x"]),
    ({"type": "string", "format": "uuid"}, ["123e4567-e89b-12d3-a456-426614174000", "123"]),
    ({"type": "string", "pattern": "^[a-z]+$"}, ["abc", "", "aB", "a\"b"]),
    ({"type": "string", "pattern": "b"}, ["abc", "xyz", "b"]),
    ({"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}}, "required": ["kind"],
      "oneOf": [{"properties": {"kind": {"const": "a"}}}, {"properties": {"kind": {"const": "b"}}}]},
     [{"kind": "a"}, {"kind": "b"}, {"kind": "a", "x": 1}]),
    ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
      "dependentRequired": {"a": ["b"]}}, [{"a": 1}, {"a": 1, "b": 2}, {"b": 2}, {}]),
    ({"type": "object", "properties": {"a": {"type": "integer"}}, "anyOf": [{"required": ["a"]}]},
     [{}, {"a": 1}]),
    ({"type": "array", "items": {"type": "integer"}, "contains": True}, [[], [1]]),
    (True, [1, "x", None, {"a": [1]}]),
    ({"enum": ["a", 1, None], "type": "string"}, ["a", 1, None]),
]


@pytest.mark.parametrize("schema,instances", NORMALISED, ids=[str(i) for i in range(len(NORMALISED))])
def test_normalisations_compile_and_are_exact(schema, instances):
    _check_exact(schema, instances)


def test_false_schema_is_rejected_clearly():
    with pytest.raises(UnsupportedSchema, match="unsatisfiable"):
        schema_to_regex(False)


def test_recursive_ref_is_unrolled_soundly():
    schema = {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                                   "next": {"$ref": "#/$defs/node"}},
                                 "required": ["v"]}}, "$ref": "#/$defs/node"}
    rx = re.compile(schema_to_regex(schema))
    assert rx.fullmatch('{"v":1,"next":{"v":2}}')
    assert not rx.fullmatch('{"next":{"v":2}}')


def test_keys_that_need_json_escapes_are_written_escaped() -> None:
    """outlines-core splices property names into the regex raw; the normaliser hands it the JSON
    spelling, so the flat regex matches `"foo\\"bar"` and never the invalid raw `"foo"bar"`."""
    import json as _json
    import re as _re

    from arborlm.constrain.schema import schema_to_regex

    keys = ["foo\nbar", 'foo"bar', "foo\\bar", "foo\tbar", "plain"]
    regex = _re.compile(schema_to_regex({"type": "object", "properties": {k: {"type": "integer"} for k in keys},
                                         "required": keys}))
    assert regex.fullmatch(_json.dumps({k: 1 for k in keys}, separators=(",", ":")))
    assert not regex.fullmatch("{" + ",".join(f'"{k}":1' for k in keys) + "}")  # raw spelling: invalid JSON
