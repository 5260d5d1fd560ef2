"""Merging schemas (allOf, `$ref` with siblings, anyOf/oneOf siblings) and proving oneOf branches
mutually exclusive. Works on plain dict schemas; raises UnsupportedSchema where a merge would not
be exact."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .regex_gen import UnsupportedSchema


class _False:
    """The schema nothing validates against (distinct from a literal `false` in user input)."""

    def __repr__(self) -> str:
        return "FALSE"


FALSE: Any = _False()
_MAX_KW = {"minimum", "minLength", "minItems", "minProperties", "minContains"}
_MIN_KW = {"maximum", "maxLength", "maxItems", "maxProperties", "maxContains"}
_SKIP = {"title", "description", "examples", "example", "default", "$comment", "$schema", "$id", "id",
         "deprecated", "readOnly", "writeOnly", "definitions", "$defs"}


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def _types(t: Any) -> set[str]:
    s = set(t if isinstance(t, list) else [t])
    if "number" in s:
        s.add("integer")
    return s


def merge_all(parts: list[Any], expand: Callable[[Any], Any]) -> Any:
    """One schema equivalent to allOf(parts); parts are already $ref/allOf-expanded."""
    out: dict[str, Any] = {}
    ap_parts: list[tuple[set[str], Any]] = []  # (declared property names, additionalProperties)
    for p in parts:
        if p is True or p == {}:
            continue
        if p is False or p is FALSE:
            return FALSE
        if not isinstance(p, dict):
            raise UnsupportedSchema(f"cannot merge non-schema {p!r}")
        p = expand(p)
        if p is FALSE or p is False:
            return FALSE
        if p is True:
            continue
        for k in ("unevaluatedProperties", "unevaluatedItems"):
            if k in p and p[k] is not True and p[k] != {}:
                # Their meaning depends on what sibling/adjacent subschemas evaluated: merging
                # would change it.
                raise UnsupportedSchema(f"'{k}' next to $ref/allOf/anyOf/oneOf/not is not enforced")
        if "additionalProperties" in p and p["additionalProperties"] not in (True, {}):
            if "patternProperties" in p:
                raise UnsupportedSchema("cannot merge additionalProperties with patternProperties")
            ap_parts.append((set(p.get("properties", {})), p["additionalProperties"]))
        for k, v in p.items():
            if k in _SKIP or k.startswith("x-") or (k == "if" and "then" not in p and "else" not in p):
                continue  # annotations (x-*: vendor extensions); an `if` without then/else asserts nothing
            if k not in out:
                out[k] = v
                continue
            cur = out[k]
            if _key(cur) == _key(v) and k != "properties":
                continue
            if k == "properties":
                merged = dict(cur)
                for name, sub in v.items():
                    merged[name] = {"allOf": [merged[name], sub]} if name in merged else sub
                out[k] = merged
            elif k == "required":
                out[k] = list(dict.fromkeys([*cur, *v]))
            elif k == "type":
                both = _types(cur) & _types(v)
                keep = [t for t in ("null", "boolean", "object", "array", "string", "number", "integer")
                        if t in both and not (t == "integer" and "number" in both)]
                if not keep:
                    return FALSE
                out[k] = keep
            elif k == "enum":
                keys = {_key(x) for x in v}
                out[k] = [x for x in cur if _key(x) in keys]
            elif k == "const":
                return FALSE
            elif k in _MAX_KW or k == "exclusiveMinimum" and not isinstance(v, bool):
                out[k] = max(cur, v)
            elif k in _MIN_KW or k == "exclusiveMaximum" and not isinstance(v, bool):
                out[k] = min(cur, v)
            elif k == "items" and isinstance(cur, dict) and isinstance(v, dict):
                out[k] = {"allOf": [cur, v]}
            elif k == "anyOf":
                out[k] = [{"allOf": [a, b]} for a in cur for b in v]
            elif k == "oneOf":  # kept apart: norm_union merges it into each branch of the first
                out["allOf"] = [*out.get("allOf", []), {"oneOf": v}]
            elif k == "additionalProperties":
                out[k] = False if False in (cur, v) else {"allOf": [cur, v]}
            else:
                raise UnsupportedSchema(f"cannot merge differing '{k}' values")
    # additionalProperties of one part constrains the properties declared only by other parts.
    props = out.get("properties")
    if props and ap_parts:
        props = dict(props)
        for declared, ap in ap_parts:
            for name in list(props):
                if name in declared:
                    continue
                if ap is False:
                    if name in out.get("required", []):
                        return FALSE
                    del props[name]
                else:
                    props[name] = {"allOf": [props[name], ap]}
        out["properties"] = props
    return out


def _value_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(v)]


def type_set(n: Any, ph_types: dict[str, str]) -> set[str] | None:
    """JSON types a normalised schema can produce (integer counted as number); None = any."""
    if "anyOf" in n:
        sets = [type_set(b, ph_types) for b in n["anyOf"]]
        return None if any(s is None for s in sets) else set().union(*sets)  # type: ignore[arg-type]
    if "enum" in n:
        return {ph_types.get(v, "string") if isinstance(v, str) and v in ph_types else _value_type(v)
                for v in n["enum"]}
    if "type" in n:
        return {"number" if n["type"] == "integer" else n["type"]}
    if "properties" in n:
        return {"object"}
    return None


def disjoint(a: Any, b: Any, ctx: Any) -> bool:
    """True when no JSON text emitted for normalised schema `a` validates against `b`, and v.v."""
    return _excl(a, b, ctx) and _excl(b, a, ctx)


def _excl(a: Any, b: Any, ctx: Any) -> bool:
    """No text emitted for `a` validates against `b` (a: what we emit; b: what validates).

    ctx (the normaliser) supplies `ph_types` (placeholder -> JSON type), `ph_excludes`
    (placeholder -> string values it never emits), `loose` (ids of schemas that had no "type":
    other JSON types validate too) and `inexact` (ids of schemas narrowed below what validates:
    they cannot stand for "what validates", so nothing is proven against them)."""
    ph_types = ctx.ph_types
    if id(b) in ctx.inexact:
        return False
    if "anyOf" in a:
        return all(_excl(x, b, ctx) for x in a["anyOf"])
    if "anyOf" in b:
        return id(b) not in ctx.loose and all(_excl(a, x, ctx) for x in b["anyOf"])
    ta = type_set(a, ph_types)
    tb_emit = type_set(b, ph_types)
    tb = None if id(b) in ctx.loose else tb_emit  # what validates: any type when b had no "type"
    if ta is not None and tb is not None and not ta & tb:
        return True
    if "enum" in a and "enum" in b:
        ph = [v for v in a["enum"] if isinstance(v, str) and v in ph_types]
        if any(isinstance(v, str) and v in ph_types for v in b["enum"]):
            return False
        if ph:  # a placeholder that provably never emits b's strings (and no other type of b)
            excluded = set().union(*(ctx.ph_excludes.get(v, set()) for v in ph))
            if not all(v in ctx.ph_excludes for v in ph) or any(
                    not isinstance(v, str) and _value_type(v) in ta for v in b["enum"]):
                return False
            if any(isinstance(v, str) and v not in excluded for v in b["enum"]):
                return False
            return not {_key(v) for v in a["enum"] if v not in ph} & {_key(v) for v in b["enum"]}
        return not {_key(v) for v in a["enum"]} & {_key(v) for v in b["enum"]}
    # For objects, b's object keywords decide even when b is loose (other types also validate).
    if ta == {"object"} and tb_emit == {"object"} and "properties" in a and "properties" in b:
        pa, pb = a["properties"], b["properties"]
        # We only ever emit declared properties: a key `b` requires that `a` never emits, or a key
        # `a` always emits that `b` forbids, separates them; so does a key `a` always emits whose
        # value fails b's schema for it.
        if set(b.get("required", [])) - set(pa):
            return True
        if b.get("additionalProperties") is False and set(a.get("required", [])) - set(pb):
            return True
        return any(_excl(pa[k], pb[k], ctx) for k in a.get("required", []) if k in pb)
    if ta == {"array"} and tb_emit == {"array"} and "prefixItems" in a and "prefixItems" in b:
        # a emits exactly len(a.prefixItems) items; b checks each position it declares.
        return any(_excl(x, y, ctx) for x, y in zip(a["prefixItems"], b["prefixItems"]))
    return False
