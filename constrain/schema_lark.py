"""Normalised JSON Schema -> a Lark grammar for llguidance: the same language as the flat regex of
schema.py, in linear size.

Why: the flat regex of an object with k optional properties lists which property comes first, so
it grows with k² (and nests: megabytes for Kubernetes or SchemaStore schemas), and building it
took seconds. Here objects, arrays and unions become grammar rules; only the leaves (strings,
numbers, enums, booleans, null, free-form objects/arrays and our own placeholder regexes) are
regex terminals, each rendered by exactly the code that renders it inside the flat regex
(`build_json_regex` + placeholder substitution). Same normaliser, same rejections (keyword and
JSON path), same narrowings, so the two engines enforce one language.

| normalised node                                        | rendered as                          |
|--------------------------------------------------------|--------------------------------------|
| {"anyOf": [...]}                                       | rule: a | b | ...                    |
| {"type":"object","properties":P,"required"?:R,         | rule over P in declared order, every |
|  "additionalProperties"?: false}                       | R present, "," between (linear rules)|
| {"type":"object","additionalProperties": V}            | "{" (KEY ":" v ("," KEY ":" v)*)? "}"|
| {"type":"array","items":I,"minItems"?,"maxItems"?}     | "[" (i ("," i){lo-1,hi-1})? "]"      |
| {"type":"array","prefixItems":[...]}                   | "[" p1 "," p2 ... "]"                |
| anything else                                          | one regex terminal                   |

One lexical hazard: llguidance's lexemes are greedy, so in a union a leaf terminal that starts like
a rule branch (a free-form object leaf next to a structured object: both start with "{") would
swallow the branch's text. Such a union is rendered as one terminal (the flat regex of the union).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .number_digits import DEFAULT_JSON_NUMBER_DIGITS
from .schema import normalize_schema
from .schema_regex import build_json_regex, substitute_placeholders

# A JSON object key (any string) and its colon, as outlines-core renders free-form keys.
_KEY = r'"([^"\\\x00-\x1F\x7F-\x9F]|\\["\\/bfnrt])*":'
_OBJECT_KEYS = {"type", "properties", "required", "additionalProperties"}
_META = set("\\.^$|?*+()[]{}/")


def literal_regex(text: str) -> str:
    """A regex matching exactly `text` (only the metacharacters escaped: llguidance's regex syntax
    refuses some escapes Python's re.escape writes, such as an escaped space)."""
    return "".join("\\" + c if c in _META else c for c in text)


_SLASH = re.compile(r"(\\*)/")
_CONTROL = re.compile(r"(\\*)([\x00-\x1f\x7f])")


def _escape_slash(m: re.Match) -> str:
    slashes = m.group(1)
    return slashes + ("/" if len(slashes) % 2 else "\\/")  # an odd run already escapes it


def _escape_control(m: re.Match) -> str:
    slashes = m.group(1)
    return slashes[: len(slashes) // 2 * 2] + f"\\x{ord(m.group(2)):02X}"  # "\<LF>" is LF too


def lark_regex(regex: str) -> str:
    """`regex` as a Lark /.../ literal: '/' escaped, raw control characters as \\xHH."""
    return "/" + _CONTROL.sub(_escape_control, _SLASH.sub(_escape_slash, regex)) + "/"


def _first_chars(node: Any, ph_types: dict[str, str]) -> set[str]:
    """Which of '{' / '[' a leaf's texts may start with (the hazard check of unions)."""
    if not isinstance(node, dict):
        return set()
    if "anyOf" in node:
        return set().union(*(_first_chars(b, ph_types) for b in node["anyOf"]))
    if "enum" in node:
        out: set[str] = set()
        for v in node["enum"]:
            kind = ph_types.get(v) if isinstance(v, str) else None
            if isinstance(v, dict) or kind == "object":
                out.add("{")
            elif isinstance(v, list) or kind == "array":
                out.add("[")
            elif kind is None and isinstance(v, str) and v.startswith("ARBORLMPH"):
                out |= {"{", "["}
        return out
    return {"object": {"{"}, "array": {"["}}.get(node.get("type"), set())


class LarkWriter:
    """Writes the rules of one schema; identical sub-schemas share one rule / terminal."""

    def __init__(self, placeholders: dict[str, str], ph_types: dict[str, str], number_digits: int) -> None:
        self.placeholders = placeholders
        self.ph_types = ph_types
        self.number_digits = number_digits
        self.lines: list[str] = []
        self._memo: dict[str, str] = {}  # json of a node (or a regex) -> its rule / terminal name
        # id of a node of the normalised tree (alive while writing) -> its name / its kind: a node
        # is serialised for the json memo once, not once per ancestor
        self._by_id: dict[int, str] = {}
        self._kinds: dict[int, str] = {}

    def grammar(self, normed: Any) -> str:
        top = self.value(normed)
        return "\n".join(["start: " + top, *self.lines]) + "\n"

    # -- names ----------------------------------------------------------------------------------
    def _rule(self, body: str) -> str:
        name = f"r{len(self.lines)}"
        self.lines.append(f"{name}: {body}")
        return name

    def terminal(self, regex: str) -> str:
        key = "re:" + regex
        if key not in self._memo:
            name = f"T{len(self.lines)}"
            self.lines.append(f"{name}: {lark_regex(regex)}")
            self._memo[key] = name
        return self._memo[key]

    # -- nodes ----------------------------------------------------------------------------------
    def value(self, node: Any) -> str:
        """The rule or terminal name of a normalised node (identical nodes share one)."""
        hit = self._by_id.get(id(node))
        if hit is not None:
            return hit
        key = json.dumps(node, sort_keys=True)
        if key not in self._memo:
            self._memo[key] = self._render(node, self.kind(node))
        self._by_id[id(node)] = self._memo[key]
        return self._memo[key]

    def kind(self, node: Any) -> str:
        """How a node is rendered: union / obj / free_obj / array / prefix, or leaf (a terminal)."""
        hit = self._kinds.get(id(node))
        if hit is None:
            hit = self._kinds[id(node)] = self._kind(node)
        return hit

    def _kind(self, node: Any) -> str:
        if not isinstance(node, dict):
            return "leaf"
        if set(node) == {"anyOf"}:
            return "leaf" if self._union_hazard(node["anyOf"]) else "union"
        t = node.get("type")
        if t == "object" and set(node) <= _OBJECT_KEYS:
            ap = node.get("additionalProperties")
            if "properties" in node and ap in (None, False):
                return "obj"
            if "properties" not in node and "required" not in node and isinstance(ap, dict) and ap:
                return "free_obj"
        if t == "array" and set(node) <= {"type", "items", "minItems", "maxItems"} and "items" in node:
            return "array"
        if t == "array" and set(node) == {"type", "prefixItems"}:
            return "prefix"
        return "leaf"

    def _union_hazard(self, branches: list) -> bool:
        """A leaf branch starting like a rule branch ('{' or '['): greedy lexing would take it."""
        kinds = [self.kind(b) for b in branches]
        rule_starts = set().union(*(_first_chars(b, self.ph_types) for b, k in zip(branches, kinds) if k != "leaf"))
        return any(_first_chars(b, self.ph_types) & rule_starts for b, k in zip(branches, kinds) if k == "leaf")

    def _render(self, node: Any, kind: str) -> str:
        if kind == "union":
            return self._rule(" | ".join(dict.fromkeys(self.value(b) for b in node["anyOf"])))
        if kind == "obj":
            return self.obj(node["properties"], node.get("required", []))
        if kind == "free_obj":
            entry = f"{self.terminal(_KEY)} {self.value(node['additionalProperties'])}"
            return self._rule(f'"{{" ({entry} ("," {entry})*)? "}}"')
        if kind == "array":
            return self.array(node["items"], node.get("minItems", 0), node.get("maxItems"))
        if kind == "prefix":
            return self._rule('"[" ' + ' "," '.join(self.value(p) for p in node["prefixItems"]) + ' "]"')
        regex = build_json_regex(node, self.placeholders, "", self.number_digits)
        return self.terminal(substitute_placeholders(regex, self.placeholders))

    def obj(self, props: dict[str, Any], required: list[str]) -> str:
        """'{' + the declared properties in order, each optional one may be absent, ',' between."""
        names = list(props)
        if not names:
            return self._rule('"{" "}"')
        req = set(required)
        pairs = [f"{self.terminal(literal_regex(json.dumps(k, ensure_ascii=False)) + ':')} {self.value(props[k])}"
                 for k in names]
        # tail(i): the properties from i on, after one was written ("" = nothing left); head(i):
        # the same before any was written. Linear in the number of properties. Only the rules
        # something refers to are written: tail(0) never is, and head(i) only by the object (i = 0)
        # or by an optional property i - 1 (a required one is always written, so its tail follows).
        tail = head = ""
        for i in range(len(names) - 1, -1, -1):
            optional = names[i] not in req
            with_tail, with_head = f'"," {pairs[i]} {tail}'.rstrip(), f"{pairs[i]} {tail}".rstrip()
            new_head = ""
            if i == 0 or names[i - 1] not in req:
                new_head = self._rule(with_head if not optional else
                                      f"{with_head} | {head}" if head else f"({with_head})?")
            if i > 0:
                tail = self._rule(with_tail if not optional else
                                  f"{with_tail} | {tail}" if tail else f"({with_tail})?")
            head = new_head
        return self._rule(f'"{{" {head} "}}"')

    def array(self, items: Any, lo: int, hi: int | None) -> str:
        """'[' + lo..hi items, ',' between."""
        if hi == 0:
            return self._rule('"[" "]"')
        item = self.value(items)
        more_lo, more_hi = max(lo, 1) - 1, None if hi is None else hi - 1
        body = item if more_hi == 0 else f'{item} ("," {item}){{{more_lo},{"" if more_hi is None else more_hi}}}'

        return self._rule(f'"[" {body} "]"' if lo else f'"[" ({body})? "]"')


def schema_to_lark(schema: Any, number_digits: int = DEFAULT_JSON_NUMBER_DIGITS) -> str:
    """A Lark grammar (llguidance's dialect) for the compact JSON texts that validate against
    `schema`: the language of `schema_to_regex(schema)`; raises UnsupportedSchema alike."""
    normed, placeholders, ph_types = normalize_schema(schema, "", number_digits, with_types=True)
    return LarkWriter(placeholders, ph_types, number_digits).grammar(normed)
