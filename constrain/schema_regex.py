"""A normalised schema (schema.py's output) -> regex text: outlines-core's `build_regex_from_schema`
with the fixes it needs, and the placeholder substitution that splices our own regexes in. Used
for the whole schema (the outlines engine) and for each leaf of the llguidance rules
(schema_lark.py), so both engines render every leaf with the same code."""

from __future__ import annotations

import json
from typing import Any

from outlines_core.json_schema import build_regex_from_schema

from .number_digits import DEFAULT_JSON_NUMBER_DIGITS, bound_free_numbers
from .regex_gen import UnsupportedSchema
from .schema_guard import MAX_REGEX_CHARS, guarded_build_regex, needs_guard


def build_json_regex(normed: Any, placeholders: dict[str, str], ws: str,
                     number_digits: int = DEFAULT_JSON_NUMBER_DIGITS) -> str:
    """outlines-core's regex for a normalised schema (forked and memory-capped when big), its
    free-form numbers bounded to `number_digits` digits."""
    normed = escaped_keys(normed)
    if needs_guard(normed, placeholders):
        regex = guarded_build_regex(json.dumps(normed), ws)
    else:
        regex = build_regex_from_schema(json.dumps(normed), ws)
    if len(regex) > MAX_REGEX_CHARS:
        raise UnsupportedSchema(f"schema too large: its regex exceeds {MAX_REGEX_CHARS} characters")
    return bound_free_numbers(regex, number_digits)


def escaped_keys(node: Any) -> Any:
    """`node` with every property name written as its JSON string body (`a"b` -> `a\\"b`).

    outlines-core splices a property name into the regex raw (regex-escaped, not JSON-escaped), so
    a key holding `"`, `\\` or a control character would come out as invalid JSON; handing it the
    JSON-escaped name makes the regex match the key's correct JSON spelling. Returns `node` itself
    when no name needs escaping."""
    if isinstance(node, list):
        out = [escaped_keys(x) for x in node]
        return node if all(a is b for a, b in zip(out, node)) else out
    if not isinstance(node, dict):
        return node
    changed: dict[str, Any] = {}
    for key in ("anyOf", "items", "prefixItems", "additionalProperties"):
        if key in node:
            sub = escaped_keys(node[key])
            if sub is not node[key]:
                changed[key] = sub
    props = node.get("properties")
    if isinstance(props, dict):
        renamed = {_json_body(k): escaped_keys(v) for k, v in props.items()}
        if any(a != b or renamed[a] is not props[b] for a, b in zip(renamed, props)):
            changed["properties"] = renamed
            changed["required"] = [_json_body(k) for k in node.get("required", [])]
            if not node.get("required"):
                changed.pop("required")
    return {**node, **changed} if changed else node


def _json_body(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)[1:-1]


def substitute_placeholders(regex: str, placeholders: dict[str, str]) -> str:
    """`regex` with every placeholder const replaced by its regex."""
    # Placeholders may nest (a container regex we wrote embeds normalised sub-schemas): substitute
    # the latest first, so that the ones they introduce are substituted after them.
    if "ARBORLMPH" not in regex:
        return regex
    for key in reversed(list(placeholders)):
        regex = regex.replace(f'"{key}"', f"({placeholders[key]})")
    if "ARBORLMPH" in regex:
        raise UnsupportedSchema("internal: placeholder left in the regex")
    return regex
