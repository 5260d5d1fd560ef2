"""anyOf / oneOf for the normaliser in schema.py.

oneOf = "exactly one branch validates". We emit a branch only when every text we emit for it
provably fails every other branch (`schema_merge._excl`, with the other branches as *what
validates*, never narrowed). To get there, a branch's *emission* may be narrowed against another
branch (`_restrict`); branches we still cannot separate are not emitted (sound: a subset).
"""

from __future__ import annotations

from typing import Any

from .regex_gen import UnsupportedSchema
from .regex_len import string_except
from .schema_merge import FALSE, _excl, merge_all


def _err(keyword: str, path: str, why: str = "") -> UnsupportedSchema:
    return UnsupportedSchema(f"unsupported JSON Schema keyword '{keyword}' at {path}" + (f": {why}" if why else ""))


def norm_union(n: Any, s: dict, path: str) -> Any:  # n: schema._Normalizer
    kw = "anyOf" if "anyOf" in s else "oneOf"
    branches = s[kw]
    if not isinstance(branches, list) or not branches:
        raise _err(kw, path, "must be a non-empty list")
    rest = {k: v for k, v in s.items() if k != kw}
    out = []
    narrowed = False
    for i, b in enumerate(branches):
        bpath = f"{path}.{kw}[{i}]"
        # Siblings of anyOf/oneOf apply to every branch (outlines-core would drop them).
        try:
            merged = merge_all([rest, n.expand(b, bpath)], lambda p, bp=bpath: n.expand(p, bp)) if rest else b
        except UnsupportedSchema as e:
            if str(e).startswith("unsupported JSON Schema keyword"):
                raise
            raise _err(kw, bpath, f"merging its siblings: {e}") from None
        nf = n.nf
        nb = n.norm(merged, bpath)
        if nb is FALSE and n.nf != nf:  # empty only because of a narrowing: it still validates texts
            if kw == "oneOf":
                raise _err("oneOf", bpath, "branch is empty after a narrowing; exclusivity unprovable")
            narrowed = True
        if nb is not FALSE:
            out.append(nb)
    if kw == "oneOf" and len(out) > 1:
        kept = _exclusive_branches(n, out, path)
        narrowed = narrowed or kept != out
        out = kept
    if not out:
        return n.narrowed(FALSE) if narrowed else FALSE
    res = out[0] if len(out) == 1 else {"anyOf": out}
    return n.narrowed(res) if narrowed else res


def _exclusive_branches(n: Any, orig: list[Any], path: str) -> list[Any]:
    emit = list(orig)
    k = len(orig)
    for i in range(k):
        for j in range(k):
            if i != j and not _excl(emit[i], orig[j], n):
                emit[i] = _restrict(n, emit[i], orig[j])
    keep = [emit[i] for i in range(k) if all(_excl(emit[i], orig[j], n) for j in range(k) if j != i)]
    if not keep:
        raise _err("oneOf", path, "cannot prove any branch mutually exclusive with the others")
    return keep


def _restrict(n: Any, a: Any, b: Any) -> Any:
    """Narrow what we emit for `a` so that it fails `b` (what validates), where a simple rule
    applies; otherwise `a` unchanged. Returns a new schema (a may also be a validity reference)."""
    if not isinstance(a, dict) or not isinstance(b, dict) or id(b) in n.inexact:
        return a
    if a == {"type": "string"} and "enum" in b and not any(isinstance(v, str) and v in n.ph_types for v in b["enum"]):
        # Any string except b's string values (escape-free strings only).
        banned = {v for v in b["enum"] if isinstance(v, str)}
        ph = n.placeholder('"' + string_except(sorted(banned)) + '"', "string")
        n.ph_excludes[ph["enum"][0]] = banned
        return ph
    if "properties" not in a or "properties" not in b:
        return a
    pa, pb = a["properties"], b["properties"]
    req_a = list(a.get("required", []))
    # 1. Stop emitting a's optional properties that b requires.
    drop = set(b.get("required", [])) - set(req_a)
    if drop & set(pa):
        a = {**a, "properties": {k: v for k, v in pa.items() if k not in drop}}
        pa = a["properties"]
        if _excl(a, b, n):
            return a
    optional = [k for k in pa if k not in req_a]
    # 2. Always emit an optional property whose value provably fails b's schema for it.
    for k in optional:
        if k in pb and _excl(pa[k], pb[k], n):
            return {**a, "required": [*req_a, k]}
    # 3. b forbids other keys: always emit an optional property b does not declare.
    if b.get("additionalProperties") is False:
        for k in optional:
            if k not in pb:
                return {**a, "required": [*req_a, k]}
    return a
