"""Object keywords: outlines-core emits only the declared properties (in declared order), which makes
most object keywords checkable at compile time instead of at generation time."""

from __future__ import annotations

import re
from typing import Any

from .regex_gen import UnsupportedSchema
from .schema_merge import FALSE
from .schema_values import count


def _err(keyword: str, path: str, why: str = "") -> UnsupportedSchema:
    return UnsupportedSchema(f"unsupported JSON Schema keyword '{keyword}' at {path}" + (f": {why}" if why else ""))


def _trivial(v: Any) -> bool:
    return v is None or v is True or v == {}


def norm_object(n: Any, s: dict, path: str) -> Any:  # n: schema._Normalizer
    from .schema import validates

    props = dict(s.get("properties") or {})
    if not isinstance(props, dict):
        raise _err("properties", path, "must be an object")
    required = list(dict.fromkeys(s.get("required") or []))
    ap = s.get("additionalProperties")
    uneval = s.get("unevaluatedProperties")
    if _trivial(ap) and not _trivial(uneval):  # without combinators left, the two coincide
        ap = uneval
    pp = s.get("patternProperties") or {}
    pn = s.get("propertyNames")
    min_p = count(s, "minProperties", path) or 0
    max_p = count(s, "maxProperties", path)
    dep_req = dict(s.get("dependentRequired") or {})
    dep_sch = dict(s.get("dependentSchemas") or {})
    for k, v in (s.get("dependencies") or {}).items():
        (dep_req if isinstance(v, list) else dep_sch)[k] = v

    def pattern_matches(name: str) -> list[Any]:
        out = []
        for pat, sub in pp.items():
            try:
                if re.search(pat, name):
                    out.append(sub)
            except re.error:
                raise _err("patternProperties", path, f"invalid pattern {pat!r}") from None
        return out

    # Required names that are not declared: declare them with the schema that governs them.
    for name in required:
        if name not in props:
            matched = pattern_matches(name)
            if matched:
                props[name] = {"allOf": matched}
            elif ap is False:
                return FALSE
            else:
                props[name] = ap if isinstance(ap, dict) else {}

    if not props:
        for kw, bad in (("dependentRequired", bool(dep_req)), ("dependentSchemas", bool(dep_sch))):
            if bad:
                raise _err(kw, path, "on an object without declared properties")
        if ap is False and not pp:
            return FALSE if min_p > 0 else {"enum": [{}]}
        if pp or not _trivial(pn) or min_p > 0 or max_p is not None:
            from .schema_generic import generic_object

            return generic_object(n, pp, pn, ap, min_p, max_p, path)
        if isinstance(ap, dict) and ap:
            nap = n.norm(ap, path + ".additionalProperties")
            return {"enum": [{}]} if nap is FALSE else {"type": "object", "additionalProperties": nap}
        return {"type": "object"}

    # Declared properties only from here on: checks become compile-time facts.
    for name in list(props):
        subs = pattern_matches(name)
        if subs:
            props[name] = {"allOf": [props[name], *subs]}
        if not _trivial(pn) and not validates(name, pn if isinstance(pn, dict) else {"not": {}}, n.root):
            if name in required:
                return FALSE
            del props[name]
    normed: dict[str, Any] = {}
    narrowed = False
    for name, sub in props.items():
        nf = n.nf
        ns = n.norm(sub, f"{path}.properties.{name}")
        if ns is FALSE:
            if name in required:
                return FALSE
            narrowed = narrowed or n.nf != nf  # dropped only because of a narrowing
            continue
        normed[name] = ns
    if min_p > len(required):
        # Narrowing: require the first optional declared properties until min_p are required.
        optional = [k for k in normed if k not in required]
        if len(required) + len(optional) < min_p:
            if ap is False and not pp:
                return FALSE
            raise _err("minProperties", path, f"only {len(normed)} properties are declared")
        required = [*required, *optional[: min_p - len(required)]]
        narrowed = True
    if max_p is not None and len(required) > max_p:
        return FALSE
    for trigger in dep_sch:
        if trigger in normed:
            raise _err("dependentSchemas", path, f"schema dependency on '{trigger}'")
    # dependentRequired: a required trigger just adds its dependents to `required`; an optional
    # one splits the object into "trigger absent" | "trigger and its dependents present".
    any_schema = n.norm(True, path)
    extra = ap if isinstance(ap, dict) and ap else None

    def declare(props_v: dict, names: list[str]) -> dict | None:
        props_v = dict(props_v)
        for d in names:
            if d not in props_v:
                if ap is False:
                    return None
                props_v[d] = n.norm(extra, path + ".additionalProperties") if extra else any_schema
        return props_v

    changed = True
    while changed:
        changed = False
        for trigger, deps in dep_req.items():
            if trigger in required and not set(deps) <= set(required):
                required = list(dict.fromkeys([*required, *deps]))
                changed = True
    declared = declare(normed, required)
    if declared is None:
        return FALSE
    normed = declared
    open_deps = {t: d for t, d in dep_req.items() if t in normed and not set(d) <= set(required)}
    if len(open_deps) > 3:
        raise _err("dependentRequired", path, "more than 3 optional properties with dependencies")
    variants: list[tuple[dict, list[str]]] = [(normed, list(required))]
    for trigger, deps in open_deps.items():
        nxt = []
        for props_v, req_v in variants:
            if trigger not in req_v:
                nxt.append(({k: v for k, v in props_v.items() if k != trigger}, req_v))
            with_deps = declare(props_v, list(deps))
            if with_deps is not None:
                nxt.append((with_deps, list(dict.fromkeys([*req_v, trigger, *deps]))))
        variants = nxt
    outs = []
    for props_v, req_v in variants:
        if any(r not in props_v for r in req_v):
            continue  # a dependent that is not declared: we would never emit it
        if max_p is not None and len(props_v) > max_p:
            if len(req_v) > max_p:
                continue
            # Narrowing: emit only the required and the first optional properties up to max_p.
            room = max_p - len(req_v)
            optional = [k for k in props_v if k not in req_v][:room]
            props_v = {k: v for k, v in props_v.items() if k in req_v or k in optional}
            narrowed = True
        out: dict[str, Any] = {"type": "object", "properties": props_v}
        if req_v:
            out["required"] = req_v
        if ap is False:  # kept so oneOf exclusivity checks know other keys are forbidden
            out["additionalProperties"] = False
        outs.append(out)
    if not outs:
        return n.narrowed(FALSE) if narrowed else FALSE
    res = outs[0] if len(outs) == 1 else {"anyOf": outs}
    return n.narrowed(res) if narrowed else res
