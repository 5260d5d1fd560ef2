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
"""

from __future__ import annotations

import json
import math
from typing import Any

from outlines_core.json_schema import build_regex_from_schema

from .regex_gen import (
    INT_FORMATS,
    STRING_FORMATS,
    UnsupportedSchema,
    int_range,
    number_range,
    pattern_to_regex,
    regex_width,
)
from .schema_guard import MAX_REGEX_CHARS, guarded_build_regex, needs_guard
from .schema_merge import FALSE, merge_all

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
PLACEHOLDER = "ARBORLMPH{}X"
RECURSION_UNROLL = 2  # how many times a recursive $ref is expanded along one path
# "Any JSON value". outlines-core renders `{}` as an unparenthesised alternation, which breaks when
# nested (`"a":X|Y` splits the object); an explicit anyOf is parenthesised.
ANY: dict = {"anyOf": [{"type": t} for t in ("string", "number", "boolean", "null", "object", "array")]}


def _err(keyword: str, path: str, why: str = "") -> UnsupportedSchema:
    return UnsupportedSchema(f"unsupported JSON Schema keyword '{keyword}' at {path}" + (f": {why}" if why else ""))


class _Normalizer:
    def __init__(self, root: Any) -> None:
        self.root = root
        self.placeholders: dict[str, str] = {}  # placeholder const -> regex of the JSON value
        self.ph_types: dict[str, str] = {}  # placeholder const -> JSON type it stands for
        self.ref_stack: list[str] = []
        # ids of normalised dicts whose *semantic* type set is wider than what we emit (the schema
        # had no "type": other JSON types validate too). Needed to prove oneOf exclusivity soundly.
        self.loose: set[int] = set()

    # -- helpers ------------------------------------------------------------------------------
    def placeholder(self, regex: str, kind: str) -> dict:
        key = PLACEHOLDER.format(len(self.placeholders))
        self.placeholders[key] = regex
        self.ph_types[key] = kind
        return {"enum": [key]}

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
                return FALSE
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
        kw = "anyOf" if "anyOf" in s else "oneOf"
        branches = s[kw]
        if not isinstance(branches, list) or not branches:
            raise _err(kw, path, "must be a non-empty list")
        rest = {k: v for k, v in s.items() if k != kw}
        out = []
        for i, b in enumerate(branches):
            bpath = f"{path}.{kw}[{i}]"
            # Siblings of anyOf/oneOf apply to every branch (outlines-core would drop them).
            merged = merge_all([rest, self.expand(b, bpath)], lambda p, bp=bpath: self.expand(p, bp)) if rest else b
            nb = self.norm(merged, bpath)
            if nb is not FALSE:
                out.append(nb)
        if kw == "oneOf" and len(out) > 1:
            out = self._exclusive_branches(out, path)
        if not out:
            return FALSE
        return out[0] if len(out) == 1 else {"anyOf": out}

    def _exclusive_branches(self, out: list[Any], path: str) -> list[Any]:
        """oneOf = anyOf over branches whose emitted texts provably fail every other branch.
        Branches are first narrowed (`_restrict`); a branch we still cannot separate is not
        emitted at all (sound: a subset of the valid texts)."""
        from .schema_merge import _excl

        n = len(out)
        for i in range(n):
            for j in range(n):
                if i != j and not _excl(out[i], out[j], self.ph_types, self.loose):
                    out[i] = self._restrict(out[i], out[j])
        keep = [out[i] for i in range(n)
                if all(_excl(out[i], out[j], self.ph_types, self.loose) for j in range(n) if j != i)]
        if not keep:
            raise _err("oneOf", path, "cannot prove any branch mutually exclusive with the others")
        return keep

    def _restrict(self, a: Any, b: Any) -> Any:
        """Sound narrowing for oneOf: stop emitting a's optional properties that b requires, so
        that every object we emit for a fails b ("exactly one" then holds)."""
        if not (isinstance(a, dict) and isinstance(b, dict) and "properties" in a and "properties" in b):
            return a
        drop = set(b.get("required", [])) - set(a.get("required", []))
        if not drop & set(a["properties"]):
            return a
        out = {**a, "properties": {k: v for k, v in a["properties"].items() if k not in drop}}
        # Its declared properties no longer describe what validates: drop the marker that
        # exclusivity proofs read as "no other keys allowed".
        out.pop("additionalProperties", None)
        if id(a) in self.loose:
            self.loose.add(id(out))
        return out

    def norm_plain(self, s: dict, path: str) -> Any:
        if "const" in s or "enum" in s:
            return self.norm_enum(s, path)
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
            branches = [self.norm_type(s, x, f"{path}") for x in types]
            branches = [b for b in branches if b is not FALSE]
            return FALSE if not branches else branches[0] if len(branches) == 1 else {"anyOf": branches}
        return self.norm_type(s, types[0], path)

    def norm_enum(self, s: dict, path: str) -> Any:
        values = [s["const"]] if "const" in s else s["enum"]
        if "const" in s and "enum" in s:
            values = [v for v in values if any(_json_eq(v, e) for e in s["enum"])]
        if not isinstance(values, list):
            raise _err("enum", path, "must be a list")
        rest = {k: v for k, v in s.items() if k not in ("enum", "const") and k not in ANNOTATIONS}
        if rest:  # keep only the values the rest of the schema accepts
            values = [v for v in values if validates(v, rest, self.root)]
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
        lo, hi = _count(s, "minLength", path) or 0, _count(s, "maxLength", path)
        fmt, pattern = s.get("format"), s.get("pattern")
        if fmt is not None and pattern is not None:
            raise _err("pattern", path, "pattern together with format is not enforced")
        inner, anchored = None, True
        if fmt is not None:
            if fmt not in STRING_FORMATS:
                raise _err("format", path, f"format {fmt!r} is not supported")
            inner = STRING_FORMATS[fmt]
        elif pattern is not None:
            try:
                inner, anchored = pattern_to_regex(pattern)
            except UnsupportedSchema as e:
                raise _err("pattern", path, str(e)) from None
        if inner is None:
            out: dict[str, Any] = {"type": "string"}
            if lo:
                out["minLength"] = lo
            if hi is not None:
                out["maxLength"] = hi
            return out
        if lo or hi is not None:  # a length alongside a pattern/format must already be implied by it
            wmin, wmax = regex_width(inner) if anchored else (0, math.inf)
            if wmin < lo or (hi is not None and wmax > hi):
                kw = "maxLength" if hi is not None and wmax > hi else "minLength"
                raise _err(kw, path, "length limits combined with pattern/format are not enforced")
        return self.placeholder('"' + inner + '"', "string")

    def norm_number(self, s: dict, t: str, path: str) -> Any:
        mult = s.get("multipleOf")
        if mult is not None:
            if mult == 1 or (t == "integer" and isinstance(mult, (int, float)) and 1 / mult == int(1 / mult)):
                t = "integer"  # multipleOf 1 (or 1/n on integers) means "integral"
            else:
                raise _err("multipleOf", path)
        lo, lo_x = s.get("minimum"), False
        hi, hi_x = s.get("maximum"), False
        xmin, xmax = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
        if xmin is True:  # draft-4 boolean form
            lo_x = lo is not None
        elif isinstance(xmin, (int, float)) and not isinstance(xmin, bool) and (lo is None or xmin >= lo):
            lo, lo_x = xmin, True
        if xmax is True:
            hi_x = hi is not None
        elif isinstance(xmax, (int, float)) and not isinstance(xmax, bool) and (hi is None or xmax <= hi):
            hi, hi_x = xmax, True
        # `format` constrains strings only; on numbers an unknown format is a pure annotation.
        fmt = s.get("format")
        if t == "integer":
            if fmt in INT_FORMATS:
                flo, fhi = INT_FORMATS[fmt]
                lo, lo_x = (flo, False) if lo is None or lo < flo else (lo, lo_x)
                hi, hi_x = (fhi, False) if hi is None or hi > fhi else (hi, hi_x)
            if lo is None and hi is None:
                return {"type": "integer"}
            ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
            ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
            if ilo is not None and ihi is not None and ilo > ihi:
                return FALSE
            return self.placeholder(int_range(ilo, ihi), "number")
        if lo is None and hi is None:
            return {"type": "number"}
        try:
            return self.placeholder(number_range(lo, lo_x, hi, hi_x), "number")
        except UnsupportedSchema as e:
            raise _err("minimum" if lo is not None else "maximum", path, str(e)) from None

    def norm_array(self, s: dict, path: str) -> Any:
        lo, hi = _count(s, "minItems", path) or 0, _count(s, "maxItems", path)
        if s.get("uniqueItems") is True and (hi is None or hi > 1):
            raise _err("uniqueItems", path)
        if "contains" in s:
            if s["contains"] is not True and s["contains"] != {}:
                raise _err("contains", path)
            if s.get("minContains", 1) > 0:  # contains: true == "at least one item"
                lo = max(lo, 1)
            if "maxContains" in s:
                raise _err("maxContains", path)
        if "unevaluatedItems" in s and s["unevaluatedItems"] is not True and s["unevaluatedItems"] != {}:
            raise _err("unevaluatedItems", path)
        items = s.get("items")
        prefix = s.get("prefixItems")
        if isinstance(items, list):  # draft-4..2019 tuple form
            prefix, items = items, s.get("additionalItems")
        if prefix is not None:
            # outlines-core emits exactly len(prefix) items, which is sound iff the count is allowed.
            n = len(prefix)
            if n < lo or (hi is not None and n > hi):
                raise _err("prefixItems", path, "prefixItems with minItems/maxItems other than its length")
            normed = [self.norm(p, f"{path}.prefixItems[{i}]") for i, p in enumerate(prefix)]
            if any(p is FALSE for p in normed):
                return FALSE
            return {"type": "array", "prefixItems": normed} if normed else {"enum": [[]]}
        out: dict[str, Any] = {"type": "array"}
        if items is not None:
            ni = self.norm(items, path + ".items")
            if ni is FALSE:
                return {"enum": [[]]} if lo == 0 else FALSE
            out["items"] = ni
        if lo:
            out["minItems"] = lo
        if hi is not None:
            out["maxItems"] = hi
        if hi is not None and hi < lo:
            return FALSE
        return out

    def norm_object(self, s: dict, path: str) -> Any:
        from .schema_objects import norm_object

        return norm_object(self, s, path)


def _count(s: dict, key: str, path: str) -> int | None:
    """A non-negative integer keyword; 2.0 is accepted as 2 (JSON Schema allows it)."""
    v = s.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
        raise UnsupportedSchema(f"invalid value {v!r} for '{key}' at {path}")
    return int(v)


def _json_eq(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) and type(a) is type(b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b
    )


def validates(value: Any, schema: dict, root: Any) -> bool:
    """Does `value` validate against `schema` (refs resolved against root)? jsonschema if present."""
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - without jsonschema we cannot prove enum values valid
        raise UnsupportedSchema("enum/const with sibling keywords needs the jsonschema package") from None
    if isinstance(root, dict):
        schema = {**{k: root[k] for k in ("$defs", "definitions") if k in root}, **schema}
    try:
        return jsonschema.Draft202012Validator(schema).is_valid(value)
    except Exception:  # noqa: BLE001 - a schema jsonschema cannot handle: keep nothing we cannot prove
        return False


def normalize_schema(schema: Any) -> tuple[Any, dict[str, str]]:
    """(normalised schema, placeholder -> regex); raises UnsupportedSchema."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise UnsupportedSchema(f"JSON schema is not valid JSON: {e}") from None
    n = _Normalizer(schema)
    out = n.norm(schema, "$")
    if out is FALSE:
        raise UnsupportedSchema("schema is unsatisfiable (no JSON value validates against it)")
    return out, n.placeholders


def schema_to_regex(schema: Any, whitespace_pattern: str | None = None) -> str:
    """Regex for the JSON texts that validate against `schema` (compact unless whitespace given)."""
    normed, placeholders = normalize_schema(schema)
    ws = "" if whitespace_pattern is None else whitespace_pattern
    if needs_guard(normed, placeholders):
        regex = guarded_build_regex(json.dumps(normed), ws)
    else:
        regex = build_regex_from_schema(json.dumps(normed), ws)
    if len(regex) > MAX_REGEX_CHARS:
        raise UnsupportedSchema(f"schema too large: its regex exceeds {MAX_REGEX_CHARS} characters")
    for key, sub in placeholders.items():
        quoted = f'"{key}"'
        if quoted not in regex:
            raise UnsupportedSchema(f"internal: placeholder {key} lost by outlines-core")
        regex = regex.replace(quoted, f"({sub})")
    return regex
