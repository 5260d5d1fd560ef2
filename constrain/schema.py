"""Honest JSON Schema → regex.

outlines-core's `build_regex_from_schema` silently ignores many keywords (`minimum`, `not`,
`uniqueItems`, `patternProperties`, siblings of `$ref` / `anyOf`, ...) and mis-handles some
(`allOf` concatenates its parts, `oneOf` becomes a plain alternation, `pattern` loses its search
semantics). We therefore *normalise* the schema first into the subset outlines-core enforces
exactly (types, properties/required, items/prefixItems/min/maxItems, min/maxLength, enum, anyOf),
and splice our own regexes (numeric ranges, formats, patterns) in through unique string
placeholders. Anything we cannot enforce raises `UnsupportedSchema` naming the keyword and its
JSON path. The promise is soundness: every string the regex accepts validates against the schema.
Completeness is traded away only where documented (compact JSON, declared property order, no
exponent in bounded numbers, no `\\uXXXX` escapes, objects restricted to declared properties).

Sound narrowings (the FSM accepts a subset of the valid instances; each is recorded with
`_Normalizer.narrowed`, so a narrowed schema is never used as "what validates" in oneOf proofs):

| keyword(s)                       | what we emit                                               | module          |
|----------------------------------|------------------------------------------------------------|-----------------|
| recursive `$ref`                 | unrolled RECURSION_UNROLL times, deeper levels not emitted | schema          |
| `uniqueItems`                    | small scalar enum items: distinct values in enum order;    | schema_values   |
|                                  | prefixItems: only if provably pairwise distinct; else at   |                 |
|                                  | most 1 item (minItems > 1 rejected)                        |                 |
| `contains`                       | the first item satisfies contains (and items)              | schema_values   |
| `minLength`/`maxLength` + pattern| pattern anchored at the start, end padded with escape-free | regex_len       |
|   or known format                | characters, repeats bounded/lengthened to fit the limits   |                 |
| `minProperties` (declared props) | the first optional declared properties become required     | schema_objects  |
| `maxProperties` (declared props) | required + first optional properties up to the cap         | schema_objects  |
| `patternProperties` (no props)   | every key matches a pattern; value: all pattern schemas    | schema_generic  |
| `propertyNames` (no props)       | keys from the normalised propertyNames schema              | schema_generic  |
| `minProperties` 1 / `maxProperties` (no props) | 1.. / ..n entries (keys may repeat:   | schema_generic  |
|                                  | n entries never give more than n distinct keys)            |                 |
| overlapping `oneOf`              | a branch narrowed until its texts fail every other branch  | schema_oneof    |
|                                  | (optional property made required, optional property b      |                 |
|                                  | requires dropped, "any string but b's enum"); branches     |                 |
|                                  | still not provably exclusive are not emitted               |                 |
| `number` / `integer` without a   | at most N integral and N fraction digits, exponent <= 2    | number_digits   |
| bound on a side (N =             | digits (N: json_number_digits, default 15, exact in a      |                 |
| json_number_digits)              | double); explicit minimum/maximum stay exact; 0 = off      |                 |
| `\\s` in a pattern                 | ECMA whitespace that needs no JSON escape                  | regex_gen       |

Bounded numbers are not recorded with `narrowed`: oneOf proofs only use a number's type, never the
set of numbers emitted, so the digit bound cannot make a proof unsound.

Unknown `format` values are *annotations*: JSON Schema 2020-12 asserts `format` only under the
optional format-assertion vocabulary (drafts 4-7: validators "may" assert it), and an unknown
format has no semantics to check, so it is ignored, also for type inference. Known formats
(regex_gen.STRING_FORMATS) are enforced: a narrowing under annotation semantics, exact under
assertion semantics. Still rejected: minProperties > 1 without declared properties (distinct
generated keys), pattern together with a format, lookarounds, `if`/`then`/`else`, most `not`.
"""

from __future__ import annotations

import json
from typing import Any

# Imported with the module, not on a schema's first enum: the import takes ~50 ms, which a server
# pays once at start rather than inside some request's grammar compile.
import jsonschema

from .number_digits import DEFAULT_JSON_NUMBER_DIGITS
from .regex_gen import INT_FORMATS, NUMBER_FORMATS, STRING_FORMATS, UnsupportedSchema
from .schema_merge import FALSE, merge_all
from .schema_regex import build_json_regex, substitute_placeholders

__all__ = ["UnsupportedSchema", "normalize_schema", "schema_to_regex"]

ANNOTATIONS = {
    "title", "description", "examples", "example", "default", "$comment", "$schema", "$id", "id",
    "deprecated", "readOnly", "writeOnly", "$anchor", "$vocabulary", "contentMediaType",
    "contentEncoding", "contentSchema", "definitions", "$defs", "discriminator", "nullable",
}
TYPES = ("null", "boolean", "object", "array", "string", "number", "integer")
STRING_KW = {"minLength", "maxLength", "pattern", "format"}
NUMBER_KW = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
ARRAY_KW = {"items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems", "contains",
            "minContains", "maxContains", "unevaluatedItems"}
OBJECT_KW = {"properties", "required", "additionalProperties", "patternProperties", "propertyNames",
             "minProperties", "maxProperties", "dependentRequired", "dependentSchemas", "dependencies",
             "unevaluatedProperties"}
# Keywords with a meaning we do not implement anywhere: always rejected when present.
ALWAYS_UNSUPPORTED = {"$dynamicRef", "$recursiveRef", "$dynamicAnchor", "$recursiveAnchor"}
KNOWN_FORMATS = set(STRING_FORMATS) | set(INT_FORMATS) | NUMBER_FORMATS
PLACEHOLDER = "ARBORLMPH{}X"
RECURSION_UNROLL = 2  # how many times a recursive $ref is expanded along one path
# "Any JSON value". outlines-core renders `{}` as an unparenthesised alternation, which breaks when
# nested (`"a":X|Y` splits the object); an explicit anyOf is parenthesised.
ANY: dict = {"anyOf": [{"type": t} for t in ("string", "number", "boolean", "null", "object", "array")]}


def _err(keyword: str, path: str, why: str = "") -> UnsupportedSchema:
    return UnsupportedSchema(f"unsupported JSON Schema keyword '{keyword}' at {path}" + (f": {why}" if why else ""))


class _Normalizer:
    def __init__(self, root: Any, ws: str = "", number_digits: int = DEFAULT_JSON_NUMBER_DIGITS) -> None:
        self.root = root
        self.ws = ws  # whitespace pattern, for the few container regexes we write ourselves
        self.number_digits = number_digits  # digit bound of numbers (number_digits.py); 0: none
        self.placeholders: dict[str, str] = {}  # placeholder const -> regex of the JSON value
        self.ph_types: dict[str, str] = {}  # placeholder const -> JSON type it stands for
        self.ref_stack: list[str] = []
        # ids of normalised dicts whose *semantic* type set is wider than what we emit (the schema
        # had no "type": other JSON types validate too). Needed to prove oneOf exclusivity soundly.
        self.loose: set[int] = set()
        # ids of normalised dicts that emit fewer texts than validate (a narrowing): they cannot be
        # used as "what validates" when proving oneOf exclusivity.
        self.inexact: set[int] = set()
        self.ph_excludes: dict[str, set[str]] = {}  # placeholder -> string values it never emits
        self.nc = 0  # narrowings so far
        self.nf = 0  # results that are FALSE only because of a narrowing

    def narrowed(self, out: Any) -> Any:
        """Record that `out` emits a strict subset of what validates (a documented narrowing)."""
        self.nc += 1
        if out is FALSE:
            self.nf += 1
        else:
            self.inexact.add(id(out))
        return out

    # -- helpers ------------------------------------------------------------------------------
    def placeholder(self, regex: str, kind: str) -> dict:
        key = PLACEHOLDER.format(len(self.placeholders))
        self.placeholders[key] = regex
        self.ph_types[key] = kind
        return {"enum": [key]}

    def regex_of(self, normed: Any) -> str:
        """Regex of a normalised sub-schema (its placeholders are substituted at the very end)."""
        return build_json_regex(normed, self.placeholders, self.ws, self.number_digits)

    def resolve(self, ref: str, path: str) -> Any:
        if not ref.startswith("#"):
            raise _err("$ref", path, f"remote reference {ref!r} cannot be resolved")
        node = self.root
        for part in ref[1:].split("/")[1:] if ref not in ("#", "#/") else []:
            part = part.replace("~1", "/").replace("~0", "~")
            try:
                node = node[int(part)] if isinstance(node, list) else node[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise _err("$ref", path, f"reference {ref!r} does not resolve") from None
        return node

    def expand(self, s: Any, path: str) -> Any:
        """Inline a top-level `$ref` (merging its siblings, as 2019+ drafts do) and flatten allOf."""
        if not isinstance(s, dict):
            return s
        if "$ref" in s:
            ref = s["$ref"]
            if not isinstance(ref, str):
                raise _err("$ref", path, "must be a string")
            if self.ref_stack.count(ref) > RECURSION_UNROLL:
                raise _err("$ref", path, f"recursive reference {ref!r} through allOf/$ref chains")
            rest = {k: v for k, v in s.items() if k != "$ref" and k not in ANNOTATIONS}
            target = self.resolve(ref, path)
            self.ref_stack.append(ref)
            try:
                target = self.expand(target, path)
            finally:
                self.ref_stack.pop()
            if isinstance(target, dict) and not rest:
                return target
            return self.expand({"allOf": [target, rest]}, path) if rest else target
        if "allOf" in s:
            parts = s["allOf"]
            if not isinstance(parts, list):
                raise _err("allOf", path, "must be a list")
            rest = {k: v for k, v in s.items() if k != "allOf"}
            expanded = [self.expand(p, f"{path}.allOf[{i}]") for i, p in enumerate(parts)]
            try:
                return merge_all([rest, *expanded], lambda p: self.expand(p, path))
            except UnsupportedSchema as e:
                raise _err("allOf", path, str(e)) from None
        return s

    # -- the walk -----------------------------------------------------------------------------
    def norm(self, s: Any, path: str) -> Any:
        """Normalised schema (outlines-core exact subset) or FALSE when nothing validates."""
        if s is True:
            return ANY
        if s is False or s is FALSE:
            return FALSE
        if not isinstance(s, dict):
            raise UnsupportedSchema(f"schema at {path} must be an object or a boolean, got {type(s).__name__}")
        if path.count(".") > 200:
            raise UnsupportedSchema(f"schema nested too deeply at {path[:200]}...")
        ref = s.get("$ref")
        if isinstance(ref, str):
            if self.ref_stack.count(ref) >= RECURSION_UNROLL:
                # Recursive schema: unrolled RECURSION_UNROLL times, deeper levels are not emitted
                # (FALSE drops an optional recursive property; a required one prunes that branch).
                # Sound: we emit a subset of the valid instances.
                return self.narrowed(FALSE)
            self.ref_stack.append(ref)  # active for the whole subtree: catches recursion via properties
            try:
                return self._norm(s, path)
            finally:
                self.ref_stack.pop()
        return self._norm(s, path)

    def _norm(self, s: dict, path: str) -> Any:
        depth = len(self.ref_stack)
        s = self.expand(s, path)
        if not isinstance(s, dict) or s is FALSE:
            return self.norm(s, path)
        for k in s:
            if k in ALWAYS_UNSUPPORTED:
                raise _err(k, path)
        if "$ref" in s:  # only reachable via a ref to a ref; expand handles it
            return self.norm(s, path)
        if "not" in s:
            return self.norm_not(s, path)
        if "if" in s:
            if "then" in s or "else" in s:
                raise _err("if", path, "if/then/else is not enforced")
            s = {k: v for k, v in s.items() if k != "if"}
        if "anyOf" in s or "oneOf" in s:
            return self.norm_union(s, path)
        assert depth == len(self.ref_stack)
        return self.norm_plain(s, path)

    def norm_not(self, s: dict, path: str) -> Any:
        inner = self.expand(s["not"], path + ".not")
        rest = {k: v for k, v in s.items() if k != "not"}
        if inner is True or inner == {}:
            return FALSE
        if inner is False:
            return self.norm(rest, path)
        keys = set(inner) - ANNOTATIONS
        if keys == {"not"}:  # not(not X) == X
            return self.norm(merge_all([rest, self.expand(inner["not"], path)], lambda p: p), path)
        if keys == {"type"}:
            t = inner["type"]
            banned = set(t if isinstance(t, list) else [t])
            allowed = [x for x in TYPES if x not in banned and not (x == "integer" and "number" in banned)]
            if "integer" in banned and "number" not in banned:
                raise _err("not", path, "'not integer' leaves non-integral numbers, which we cannot express")
            return self.norm(merge_all([rest, {"type": allowed}], lambda p: p), path)
        raise _err("not", path)

    def norm_union(self, s: dict, path: str) -> Any:
        from .schema_oneof import norm_union

        return norm_union(self, s, path)

    def norm_plain(self, s: dict, path: str) -> Any:
        if "const" in s or "enum" in s:
            return self.norm_enum(s, path)
        if "format" in s and s["format"] not in KNOWN_FORMATS:
            # An unknown format is an annotation (see the narrowing table): it neither asserts
            # anything nor says which type the schema is about.
            s = {k: v for k, v in s.items() if k != "format"}
        t = s.get("type")
        if t is None:  # infer from the keywords present (a subset of all types: sound)
            types = [name for name, kws in (("object", OBJECT_KW), ("array", ARRAY_KW), ("string", STRING_KW),
                                            ("number", NUMBER_KW)) if kws & set(s)]
            if not types:
                return ANY
            out = self.norm_plain({**s, "type": types}, path)
            if isinstance(out, dict):
                self.loose.add(id(out))
            return out
        else:
            types = t if isinstance(t, list) else [t]
        for x in types:
            if x not in TYPES:
                raise UnsupportedSchema(f"unknown type {x!r} at {path}.type")
        if "number" in types and "integer" in types:
            types = [x for x in types if x != "integer"]
        if len(types) != 1:
            nf = self.nf
            branches = [b for b in (self.norm_type(s, x, f"{path}") for x in types) if b is not FALSE]
            out = FALSE if not branches else branches[0] if len(branches) == 1 else {"anyOf": branches}
            return self.narrowed(out) if nf != self.nf and len(branches) < len(types) else out
        return self.norm_type(s, types[0], path)

    def norm_enum(self, s: dict, path: str) -> Any:
        values = [s["const"]] if "const" in s else s["enum"]
        if "const" in s and "enum" in s:
            values = [v for v in values if any(_json_eq(v, e) for e in s["enum"])]
        if not isinstance(values, list):
            raise _err("enum", path, "must be a list")
        rest = {k: v for k, v in s.items() if k not in ("enum", "const") and k not in ANNOTATIONS}
        if rest:  # keep only the values the rest of the schema accepts
            values = valid_values(values, rest, self.root)
        return {"enum": values} if values else FALSE

    def norm_type(self, s: dict, t: str, path: str) -> Any:
        if t in ("null", "boolean"):
            return {"type": t}
        if t == "string":
            return self.norm_string(s, path)
        if t in ("integer", "number"):
            return self.norm_number(s, t, path)
        if t == "array":
            return self.norm_array(s, path)
        return self.norm_object(s, path)

    def norm_string(self, s: dict, path: str) -> Any:
        from .schema_values import norm_string

        return norm_string(self, s, path)

    def norm_number(self, s: dict, t: str, path: str) -> Any:
        from .schema_values import norm_number

        return norm_number(self, s, t, path)

    def norm_array(self, s: dict, path: str) -> Any:
        from .schema_values import norm_array

        return norm_array(self, s, path)

    def norm_object(self, s: dict, path: str) -> Any:
        from .schema_objects import norm_object

        return norm_object(self, s, path)


def _json_eq(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) and type(a) is type(b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b
    )


def validates(value: Any, schema: dict, root: Any) -> bool:
    """Does `value` validate against `schema` (refs resolved against root)?"""
    return valid_values([value], schema, root) == [value]


def valid_values(values: list, schema: dict, root: Any) -> list:
    """The values that validate against `schema` (one validator for all: enums run to thousands)."""
    if isinstance(root, dict):
        schema = {**{k: root[k] for k in ("$defs", "definitions") if k in root}, **schema}
    try:
        validator = jsonschema.Draft202012Validator(schema)
        return [v for v in values if validator.is_valid(v)]
    except Exception:  # noqa: BLE001 - a schema jsonschema cannot handle: keep nothing we cannot prove
        return []


def normalize_schema(schema: Any, ws: str = "", number_digits: int = DEFAULT_JSON_NUMBER_DIGITS,
                     with_types: bool = False) -> tuple[Any, ...]:
    """(normalised schema, placeholder -> regex[, placeholder -> the JSON type it stands for]);
    raises UnsupportedSchema."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise UnsupportedSchema(f"JSON schema is not valid JSON: {e}") from None
    n = _Normalizer(schema, ws, number_digits)
    out = n.norm(schema, "$")
    if out is FALSE:
        raise UnsupportedSchema("schema is unsatisfiable (no JSON value validates against it)")
    return (out, n.placeholders, n.ph_types) if with_types else (out, n.placeholders)


def schema_to_regex(schema: Any, whitespace_pattern: str | None = None,
                    number_digits: int = DEFAULT_JSON_NUMBER_DIGITS) -> str:
    """Regex for the JSON texts that validate against `schema` (compact unless whitespace given),
    numbers without a bound limited to `number_digits` digits (0: unbounded)."""
    ws = "" if whitespace_pattern is None else whitespace_pattern
    normed, placeholders = normalize_schema(schema, ws, number_digits)
    return substitute_placeholders(build_json_regex(normed, placeholders, ws, number_digits), placeholders)
