"""Objects without declared properties whose keys or count are constrained (patternProperties,
propertyNames, minProperties, maxProperties): outlines-core cannot express them, so we write the
object regex ourselves, splicing in regexes of the normalised key and value schemas. All of these
are narrowings (see the table in schema.py), recorded as such for oneOf proofs."""

from __future__ import annotations

from typing import Any

from .regex_gen import STRING_CHAR, UnsupportedSchema, pattern_to_regex
from .schema_merge import FALSE


def _err(keyword: str, path: str, why: str = "") -> UnsupportedSchema:
    return UnsupportedSchema(f"unsupported JSON Schema keyword '{keyword}' at {path}" + (f": {why}" if why else ""))


def _trivial(v: Any) -> bool:
    return v is None or v is True or v == {}


def generic_object(n: Any, pp: dict, pn: Any, ap: Any, min_p: int, max_p: int | None, path: str) -> Any:
    """Objects whose every key matches a patternProperties pattern (value: all pattern schemas
    together) or else validates propertyNames (value: additionalProperties), with min_p..max_p
    entries. min_p > 1 is rejected: we cannot keep generated keys distinct."""
    empty = {"enum": [{}]}
    if max_p == 0:
        return empty if min_p == 0 else FALSE
    if min_p > 1:
        raise _err("minProperties", path, f"{min_p} distinct keys on an object without declared properties")
    if pp:
        if not _trivial(pn):
            raise _err("propertyNames", path, "together with patternProperties")
        try:
            keys = [pattern_to_regex(p)[0] for p in pp]
        except UnsupportedSchema as e:
            raise _err("patternProperties", path, str(e)) from None
        key_rx = "(?:" + "|".join(f'"{k}"' for k in keys) + ")"
        # A key may match several patterns: its value must satisfy each of their schemas.
        subs = list(pp.values())
        value: Any = subs[0] if len(subs) == 1 else {"allOf": subs}
        vpath = path + ".patternProperties"
    else:
        if pn is False:
            return empty if min_p == 0 else FALSE
        if _trivial(pn):
            key_rx = f'"{STRING_CHAR}*"'
        else:
            nk = n.norm({"allOf": [pn, {"type": "string"}]}, path + ".propertyNames")
            if nk is FALSE:
                return empty if min_p == 0 else FALSE
            key_rx = "(?:" + n.regex_of(nk) + ")"
        value = ap if isinstance(ap, dict) else True
        vpath = path + ".additionalProperties"
    nv = n.norm(value, vpath)
    if nv is FALSE:
        return empty if min_p == 0 else FALSE
    ws = n.ws
    kv = f"{key_rx}{ws}:{ws}(?:{n.regex_of(nv)})"
    more = "*" if max_p is None else f"{{0,{max_p - 1}}}"
    body = f"{kv}(?:{ws},{ws}{kv}){more}"
    return n.narrowed(n.placeholder(rf"\{{{ws}{body if min_p else f'(?:{body})?'}{ws}\}}", "object"))
