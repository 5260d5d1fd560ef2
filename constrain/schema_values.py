"""Strings, numbers and arrays for the normaliser in schema.py (see its narrowing table)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .number_digits import max_magnitude
from .regex_gen import (
    INT_FORMATS,
    STRING_FORMATS,
    UnsupportedSchema,
    int_range,
    number_range,
    pattern_to_regex,
)
from .regex_len import pattern_with_length
from .schema_merge import FALSE, disjoint


def _err(keyword: str, path: str, why: str = "") -> UnsupportedSchema:
    return UnsupportedSchema(f"unsupported JSON Schema keyword '{keyword}' at {path}" + (f": {why}" if why else ""))


def count(s: dict, key: str, path: str) -> int | None:
    """A non-negative integer keyword; 2.0 is accepted as 2 (JSON Schema allows it)."""
    v = s.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
        raise UnsupportedSchema(f"invalid value {v!r} for '{key}' at {path}")
    return int(v)


def norm_string(n: Any, s: dict, path: str) -> Any:  # n: schema._Normalizer
    lo, hi = count(s, "minLength", path) or 0, count(s, "maxLength", path)
    fmt, pattern = s.get("format"), s.get("pattern")
    if fmt is not None and fmt not in STRING_FORMATS:
        # JSON Schema 2020-12 makes `format` an annotation unless the optional format-assertion
        # vocabulary is in use (drafts 4-7: validators "may" assert it). An unknown format has no
        # semantics we could check, so it is treated as the annotation it is by default.
        fmt = None
    if fmt is not None and pattern is not None:
        # Intersecting a format with a pattern is out of reach; the pattern is checked, and the
        # known format dropped would make the FSM accept texts a format-asserting validator refuses.
        raise _err("pattern", path, "pattern together with format is not enforced")
    if fmt is None and pattern is None:
        out: dict[str, Any] = {"type": "string"}
        if lo:
            out["minLength"] = lo
        if hi is not None:
            out["maxLength"] = hi
        return out
    try:
        if lo or hi is not None:  # narrowed so every emitted string has an allowed length
            inner = pattern_with_length(STRING_FORMATS[fmt] if fmt else pattern, lo, hi, anchored=fmt is not None)
        else:
            inner = STRING_FORMATS[fmt] if fmt else pattern_to_regex(pattern)[0]
    except UnsupportedSchema as e:
        kw = "pattern" if pattern is not None else "format"
        if "allowed length" in str(e):
            kw = "maxLength" if hi is not None else "minLength"
        raise _err(kw, path, str(e)) from None
    return n.placeholder('"' + inner + '"', "string")


def norm_number(n: Any, s: dict, t: str, path: str) -> Any:
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
    digits = n.number_digits  # 0: no digit bound (see number_digits.py)
    if t == "integer":
        if fmt in INT_FORMATS:
            flo, fhi = INT_FORMATS[fmt]
            lo, lo_x = (flo, False) if lo is None or lo < flo else (lo, lo_x)
            hi, hi_x = (fhi, False) if hi is None or hi > fhi else (hi, hi_x)
        if lo is None and hi is None:
            return {"type": "integer"}  # bounded in build_json_regex (number_digits.bound_free_numbers)
        ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
        ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
        if digits and ilo is None:
            ilo = -max_magnitude(digits, ihi)
        if digits and ihi is None:
            ihi = max_magnitude(digits, ilo)
        if ilo is not None and ihi is not None and ilo > ihi:
            return FALSE
        return n.placeholder(int_range(ilo, ihi), "number")
    if lo is None and hi is None:
        return {"type": "number"}  # bounded in build_json_regex
    if digits and lo is None:
        lo, lo_x = -max_magnitude(digits, math.floor(hi)) - 1, True
    if digits and hi is None:
        hi, hi_x = max_magnitude(digits, math.ceil(lo)) + 1, True
    try:
        return n.placeholder(number_range(lo, lo_x, hi, hi_x, digits), "number")
    except UnsupportedSchema as e:
        raise _err("minimum" if lo is not None else "maximum", path, str(e)) from None


MAX_UNIQUE_ENUM = 24  # enum items up to this many values get the "distinct, in enum order" form


def _unique_enum(n: Any, values: list, lo: int, hi: int | None) -> Any:
    """Arrays of distinct values of a small scalar enum, in enum order (a subset of the valid
    uniqueItems arrays), as a placeholder; None when the enum does not qualify."""
    if any(isinstance(v, (dict, list, float)) for v in values) or len(values) > MAX_UNIQUE_ENUM:
        return None
    texts = list(dict.fromkeys(json.dumps(v, ensure_ascii=False) for v in values))
    if lo > 1 or (hi is not None and hi < len(texts)) or any(v in n.ph_types for v in values if isinstance(v, str)):
        return None
    ws = n.ws
    esc = [re.escape(t) for t in texts]
    seqs = ["".join([esc[i], *(f"(?:{ws},{ws}{e})?" for e in esc[i + 1:])]) for i in range(len(esc))]
    body = "(?:" + "|".join(seqs) + ")"
    return n.placeholder(rf"\[{ws}{body if lo else '(?:' + body + ')?'}{ws}\]", "array")


def norm_array(n: Any, s: dict, path: str) -> Any:
    lo, hi = count(s, "minItems", path) or 0, count(s, "maxItems", path)
    unique = s.get("uniqueItems") is True and (hi is None or hi > 1)
    contains = None
    if "contains" in s:
        if "maxContains" in s:
            raise _err("maxContains", path)
        if s["contains"] is not True and s["contains"] != {}:
            if s.get("minContains", 1) > 1 or unique or isinstance(s.get("items"), list) or "prefixItems" in s:
                raise _err("contains", path)
            contains = s["contains"]
        if s.get("minContains", 1) > 0:  # contains: true == "at least one item"
            lo = max(lo, 1)
    if "unevaluatedItems" in s and s["unevaluatedItems"] is not True and s["unevaluatedItems"] != {}:
        raise _err("unevaluatedItems", path)
    items = s.get("items")
    prefix = s.get("prefixItems")
    if isinstance(items, list):  # draft-4..2019 tuple form
        prefix, items = items, s.get("additionalItems")
    if prefix is not None:
        # outlines-core emits exactly len(prefix) items, which is sound iff the count is allowed.
        k = len(prefix)
        if k < lo or (hi is not None and k > hi):
            raise _err("prefixItems", path, "prefixItems with minItems/maxItems other than its length")
        normed = [n.norm(p, f"{path}.prefixItems[{i}]") for i, p in enumerate(prefix)]
        if any(p is FALSE for p in normed):
            return FALSE
        if unique and not all(disjoint(normed[i], normed[j], n) for i in range(k) for j in range(i)):
            raise _err("uniqueItems", path, "cannot prove the prefixItems pairwise distinct")
        return {"type": "array", "prefixItems": normed} if normed else {"enum": [[]]}
    out: dict[str, Any] = {"type": "array"}
    ni = None
    if items is not None:
        ni = n.norm(items, path + ".items")
        if ni is FALSE:
            return {"enum": [[]]} if lo == 0 else FALSE
        out["items"] = ni
    if contains is not None and s.get("minContains", 1) > 0:
        # Narrowing: the first item satisfies `contains` (and `items`), the others `items`.
        first = n.norm({"allOf": [contains, items if items is not None else True]}, path + ".contains")
        if first is FALSE:
            raise _err("contains", path, "no item can satisfy it")
        rest = n.regex_of(ni) if ni is not None else n.regex_of(n.norm(True, path))
        if hi is not None and hi < max(lo, 1):
            return FALSE
        more = f"{{{max(lo, 1) - 1},{'' if hi is None else hi - 1}}}"
        ws = n.ws
        return n.narrowed(n.placeholder(rf"\[{ws}(?:{n.regex_of(first)})(?:{ws},{ws}(?:{rest})){more}{ws}\]", "array"))
    if unique:
        # Narrowing: a small scalar enum item type -> its distinct values in enum order;
        # otherwise at most one item (duplicates impossible). minItems > 1 is then rejected.
        enum = ni.get("enum") if isinstance(ni, dict) else None
        if ni == {"type": "boolean"}:
            enum = [False, True]
        if ni == {"type": "null"}:
            enum = [None]
        ph = _unique_enum(n, enum, lo, hi) if enum else None
        if ph is not None:
            return n.narrowed(ph)
        if lo > 1:
            raise _err("uniqueItems", path, f"with minItems {lo} on items we cannot keep distinct")
        hi = 1
        n.narrowed(out)
    if lo:
        out["minItems"] = lo
    if hi is not None:
        out["maxItems"] = hi
    if hi is not None and hi < lo:
        return FALSE
    return out
