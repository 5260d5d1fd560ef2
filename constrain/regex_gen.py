"""Regexes for the JSON-Schema pieces outlines-core does not enforce exactly: numeric ranges,
string formats, and ECMA `pattern`s (which JSON Schema applies as a *search* over the decoded
string, while outlines-core splices them in as a full match over the raw JSON text).

Every regex here describes JSON text (numbers, or strings *with* their quotes) and is sound: each
string it matches validates. Where exactness would cost a huge regex we accept a subset (no exponent
notation for bounded numbers, no `\\uXXXX` escapes inside patterns) and say so.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

try:  # Python 3.11+
    import re._constants as _sre_c  # type: ignore[import-not-found]
    import re._parser as _sre_p  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_p  # type: ignore[no-redef]


class UnsupportedSchema(ValueError):
    """A schema construct we cannot enforce exactly."""


# One character of a JSON string, raw or escaped (the same alphabet as outlines-core's STRING_INNER).
STRING_CHAR = r'(?:[^"\\\x00-\x1F\x7F-\x9F]|\\["\\/bfnrt])'
# Characters a pattern may emit unescaped: they decode to themselves inside a JSON string.
_UNSAFE_CLASS = r'"\\\x00-\x1F\x7F-\x9F'

# --------------------------------------------------------------------------- integer / number ranges


def _same_len_range(lo: str, hi: str) -> str:
    """Regex for the decimal strings of equal length n with lo <= s <= hi (lexicographic = numeric)."""
    n = len(lo)
    if n == 0:
        return ""
    if lo == hi:
        return lo
    if lo == "0" * n and hi == "9" * n:
        return f"[0-9]{{{n}}}" if n > 1 else "[0-9]"
    if lo[0] == hi[0]:
        return lo[0] + _same_len_range(lo[1:], hi[1:])
    rest = n - 1
    if lo[1:] == "0" * rest and hi[1:] == "9" * rest:
        return f"[{lo[0]}-{hi[0]}]" + (f"[0-9]{{{rest}}}" if rest else "")
    parts = [lo[0] + _same_len_range(lo[1:], "9" * rest)]
    a, b = int(lo[0]) + 1, int(hi[0]) - 1
    if a <= b:
        parts.append(f"[{a}-{b}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    parts.append(hi[0] + _same_len_range("0" * rest, hi[1:]))
    return "(?:" + "|".join(parts) + ")"


def nonneg_int_range(lo: int, hi: int | None) -> str:
    """Canonical decimal integers (no sign, no leading zeros) in [lo, hi]; hi None = unbounded."""
    assert lo >= 0 and (hi is None or hi >= lo)
    parts = []
    length = len(str(lo))
    while hi is None or length <= len(str(hi)):
        a = max(lo, 10 ** (length - 1) if length > 1 else 0)
        top = 10**length - 1
        if hi is None and a == 10 ** (length - 1) and length > 1:
            parts.append(f"[1-9][0-9]{{{length - 1},}}")
            break
        b = top if hi is None else min(hi, top)
        parts.append(_same_len_range(str(a), str(b)))
        if hi is None and b == top:
            parts.append(f"[1-9][0-9]{{{length},}}")
            break
        length += 1
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def int_range(lo: int | None, hi: int | None) -> str:
    """JSON integers (compact, canonical) in [lo, hi]; None = unbounded on that side."""
    if lo is not None and hi is not None and lo > hi:
        raise UnsupportedSchema(f"integer range [{lo}, {hi}] is empty")
    parts = []
    if hi is None or hi >= 0:
        parts.append(nonneg_int_range(max(lo or 0, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        neg_hi = None if lo is None else -lo
        neg_lo = 1 if hi is None or hi >= 0 else -hi
        parts.append("-" + nonneg_int_range(neg_lo, neg_hi))
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _fractions(frac_digits: int) -> tuple[str, str, str]:
    """(any fraction, all-zero fraction, non-zero fraction) regexes, at most `frac_digits` digits
    (0: unbounded). The bounded non-zero fraction ends in a non-zero digit (a sound subset)."""
    if frac_digits == 0:
        return r"(?:\.[0-9]+)?", r"(?:\.0+)?", r"\.[0-9]*[1-9][0-9]*"
    return (rf"(?:\.[0-9]{{1,{frac_digits}}})?", rf"(?:\.0{{1,{frac_digits}}})?",
            rf"\.[0-9]{{0,{frac_digits - 1}}}[1-9]")


def _nonneg_number(lo: int, lo_excl: bool, hi: int | None, hi_excl: bool, frac_digits: int) -> list[str]:
    """Alternatives for decimals x >= 0 (no exponent) with lo <(=) x <(=) hi; lo, hi integers."""
    frac_any, frac_zero, frac_nonzero = _fractions(frac_digits)
    parts = []
    first = lo + 1 if lo_excl else lo
    last = None if hi is None else hi - 1
    if last is None or first <= last:
        parts.append(nonneg_int_range(first, last) + frac_any)
    if lo_excl and (hi is None or lo < hi):
        parts.append(str(lo) + frac_nonzero)
    if hi is not None and not hi_excl and (hi > lo or (hi == lo and not lo_excl)):
        parts.append(str(hi) + frac_zero)
    return parts


def number_range(lo: float | None, lo_excl: bool, hi: float | None, hi_excl: bool, frac_digits: int = 0) -> str:
    """JSON numbers in the interval; bounds must be integral (else UnsupportedSchema). At most
    `frac_digits` fraction digits (0: unbounded)."""
    for b in (lo, hi):
        if b is not None and (not math.isfinite(b) or b != int(b)):
            raise UnsupportedSchema(f"non-integral number bound {b}")
    ilo = None if lo is None else int(lo)
    ihi = None if hi is None else int(hi)
    parts: list[str] = []
    if ihi is None or ihi > 0 or (ihi == 0 and not hi_excl):  # the x >= 0 side
        if ilo is None or ilo < 0:
            parts += _nonneg_number(0, False, ihi, hi_excl, frac_digits)
        else:
            parts += _nonneg_number(ilo, lo_excl, ihi, hi_excl, frac_digits)
    if ilo is None or ilo < 0:  # the x < 0 side, mirrored: y = -x > 0
        if ihi is None or ihi >= 0:
            neg = _nonneg_number(0, True, None if ilo is None else -ilo, lo_excl, frac_digits)
        else:
            neg = _nonneg_number(-ihi, hi_excl, None if ilo is None else -ilo, lo_excl, frac_digits)
        parts += ["-" + p for p in neg]
    if not parts:
        raise UnsupportedSchema(f"number range ({lo}, {hi}) is empty")
    return "(?:" + "|".join(f"(?:{p})" for p in parts) + ")"


# --------------------------------------------------------------------------------------- formats

# Calendar-exact (RFC 3339 full-date): month lengths, and 29 February only in leap years.
_DATE = (
    r"(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    r"|02-(?:0[1-9]|1[0-9]|2[0-8]))|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)"
)
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_URI = (
    r"(?:https?|ftp)://[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?"
    r"(?:/[a-zA-Z0-9._~!$&'()*+,;=:@/-]*)?(?:\?[a-zA-Z0-9._~!$&'()*+,;=:@/?-]*)?"
)
_DURATION = (
    r"P(?:(?:[0-9]+Y(?:[0-9]+M)?(?:[0-9]+D)?|[0-9]+M(?:[0-9]+D)?|[0-9]+D)"
    r"(?:T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S))?"
    r"|T(?:[0-9]+H(?:[0-9]+M)?(?:[0-9]+S)?|[0-9]+M(?:[0-9]+S)?|[0-9]+S)|[0-9]+W)"
)
# Inner regexes (without quotes); all are subsets of the format's valid strings.
STRING_FORMATS: dict[str, str] = {
    "date-time": _DATE + "T" + _TIME,
    "date": _DATE,
    "time": _TIME,
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "email": r"[a-zA-Z0-9_%+-]+(?:\.[a-zA-Z0-9_%+-]+)*@(?:" + _LABEL + r"\.){1,3}[a-zA-Z]{2,24}",
    "ipv4": _OCTET + r"(?:\." + _OCTET + "){3}",
    "hostname": _LABEL + r"(?:\." + _LABEL + "){0,2}",
    "uri": _URI,
    "uri-reference": _URI,  # every absolute URI is a URI reference
    "iri": _URI,
    "iri-reference": _URI,
    "duration": _DURATION,
    "byte": r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?",
}
# OpenAPI numeric formats: ranges we can enforce on integers, no-ops on numbers.
INT_FORMATS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
NUMBER_FORMATS = {"float", "double", "int32", "int64"}


def regex_width(regex: str) -> tuple[int, int]:
    """(min, max) characters a Python-compatible regex can match (max may be huge)."""
    return _sre_p.parse(regex).getwidth()


# --------------------------------------------------------------------------------------- patterns

_CAT = {
    _sre_c.CATEGORY_DIGIT: "0-9",
    _sre_c.CATEGORY_WORD: "a-zA-Z0-9_",
    # ECMA \s minus the characters JSON must escape (those are excluded from every class anyway).
    _sre_c.CATEGORY_SPACE: "\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff",
}
_NOT_CAT = {
    _sre_c.CATEGORY_NOT_DIGIT: "0-9",
    _sre_c.CATEGORY_NOT_WORD: "a-zA-Z0-9_",
    _sre_c.CATEGORY_NOT_SPACE: "\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff",
}


def _class_char(c: int) -> str:
    ch = chr(c)
    return "\\" + ch if ch in "\\]^-[" else ch


def _safe(c: int) -> bool:
    return c >= 0x20 and c != 0x22 and c != 0x5C and not 0x7F <= c <= 0x9F


def _literal(c: int) -> str:
    """A pattern character as JSON text: unsafe characters as their JSON escape."""
    if _safe(c):
        return re.escape(chr(c))
    return re.escape(json.dumps(chr(c))[1:-1])


def _safe_ranges(a: int, b: int) -> list[tuple[int, int]]:
    """[a, b] minus the characters JSON must escape, as sub-ranges."""
    out, start = [], None
    for c in list(range(a, min(b, 0xA0) + 1)) + ([b] if b > 0xA0 else []):
        if c > 0xA0:  # everything above U+009F is safe: close the run at b
            start = max(0xA0, a) if start is None else start
            out.append((start, b))
            return out
        if _safe(c):
            start = c if start is None else start
        elif start is not None:
            out.append((start, c - 1))
            start = None
    if start is not None:
        out.append((start, min(b, 0xA0)))
    return out


def _emit_in(items: list) -> str:
    negate = any(op is _sre_c.NEGATE for op, _ in items)
    body = []
    for op, av in items:
        if op is _sre_c.NEGATE:
            continue
        if op is _sre_c.LITERAL:
            if negate or _safe(av):  # unsafe characters are dropped from positive classes
                body.append(_class_char(av))
        elif op is _sre_c.RANGE:
            pieces = [av] if negate else _safe_ranges(*av)
            body += [f"{_class_char(a)}-{_class_char(b)}" if a < b else _class_char(a) for a, b in pieces]
        elif op is _sre_c.CATEGORY and av in _CAT:
            body.append(_CAT[av])
        elif op is _sre_c.CATEGORY and av in _NOT_CAT and not negate and len(items) == 1:
            return f"[^{_NOT_CAT[av]}{_UNSAFE_CLASS}]"
        else:
            raise UnsupportedSchema(f"pattern character class item {op} {av}")
    if negate:
        return f"[^{''.join(body)}{_UNSAFE_CLASS}]"
    if not body:
        raise UnsupportedSchema("pattern character class is empty after removing unsafe characters")
    return f"[{''.join(body)}]"


def _emit(seq) -> str:
    out = []
    for op, av in seq:
        if op is _sre_c.LITERAL:
            out.append(_literal(av))
        elif op is _sre_c.NOT_LITERAL:
            out.append(f"[^{_class_char(av)}{_UNSAFE_CLASS}]")
        elif op is _sre_c.ANY:
            out.append(f"[^{_UNSAFE_CLASS}]")
        elif op is _sre_c.IN:
            out.append(_emit_in(av))
        elif op is _sre_c.BRANCH:
            out.append("(?:" + "|".join(_emit(b) for b in av[1]) + ")")
        elif op is _sre_c.SUBPATTERN:
            if av[1] or av[2]:
                raise UnsupportedSchema("pattern inline flags")
            out.append("(?:" + _emit(av[3]) + ")")
        elif op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT):  # lazy and greedy match the same strings
            lo, hi, item = av
            hi_s = "" if hi == _sre_c.MAXREPEAT else str(hi)
            out.append("(?:" + _emit(item) + f"){{{lo},{hi_s}}}")
        elif op is _sre_c.AT:
            raise UnsupportedSchema("pattern anchor in the middle of the pattern")
        else:
            raise UnsupportedSchema(f"pattern construct {str(op).lower()}")
    return "".join(out)


def _emit_top(seq) -> str:
    items = list(seq)
    begins = bool(items) and items[0][0] is _sre_c.AT and items[0][1] in (_sre_c.AT_BEGINNING, _sre_c.AT_BEGINNING_STRING)
    if begins:
        items = items[1:]
    ends = bool(items) and items[-1][0] is _sre_c.AT and items[-1][1] in (_sre_c.AT_END, _sre_c.AT_END_STRING)
    if ends:
        items = items[:-1]
    if len(items) == 1 and items[0][0] is _sre_c.BRANCH and not begins and not ends:
        return "(?:" + "|".join(_emit_top(b) for b in items[0][1][1]) + ")"
    pre = "" if begins else STRING_CHAR + "*"
    post = "" if ends else STRING_CHAR + "*"
    return pre + _emit(items) + post


def parse_pattern(pattern: str) -> Any:
    """Python's parse tree of an ECMA `pattern`; invalid ones and inline flags are rejected."""
    try:
        parsed = _sre_p.parse(pattern)
    except re.error as e:
        raise UnsupportedSchema(f"invalid pattern {pattern!r}: {e}") from None
    if parsed.state.flags & ~(_sre_c.SRE_FLAG_UNICODE):
        raise UnsupportedSchema("pattern inline flags")
    return parsed


@lru_cache(maxsize=1024)
def pattern_to_regex(pattern: str) -> tuple[str, bool]:
    """(regex over JSON string content, anchored) for an ECMA `pattern` (search semantics).

    `anchored` is True when every branch is anchored at both ends, so the match width is the
    decoded string's length (used to check minLength/maxLength alongside the pattern).
    """
    parsed = parse_pattern(pattern)
    regex = _emit_top(parsed)
    anchored = STRING_CHAR not in regex
    return regex, anchored
