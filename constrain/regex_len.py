"""Length limits next to a `pattern` / `format`, and "any string but these" (sound narrowings).

JSON Schema counts the *decoded* string's code points. We work on the parsed pattern, whose width
is in decoded characters: every piece `regex_gen._emit` produces matches exactly one decoded
character per pattern character (unsafe literals become their JSON escape; classes drop unsafe
characters), so the width of the pattern tree is the decoded length of what we emit.

To meet the limits we narrow the pattern instead of rejecting it:
- an unanchored start is anchored (the match starts at the first character: still a search hit);
- an unanchored end is padded with 0..k escape-free characters so the total stays in range;
- unbounded repeats `{m,}` become `{m+f, m+f+e}` (bounded ones `{min(m+f, M), M}`), with the
  smallest f and then the largest e that fit.
"""

from __future__ import annotations

import re

from .regex_gen import STRING_CHAR, UnsupportedSchema, _emit, _sre_c, _sre_p, parse_pattern

SAFE_CHAR = r'[^"\\\x00-\x1F\x7F-\x9F]'  # one decoded character, written without an escape
_INF = 1 << 40


def _transform(seq, f: int, e: int | None, only: int | None = None, _n: list | None = None):
    """Copy of a parsed pattern with unbounded repeats {m,} turned into {m+f, m+f+e} and bounded
    ones {m,M} into {min(m+f, M), M}; with `only`, f applies to the only-th repeat alone."""
    n = [0] if _n is None else _n
    out = []
    for op, av in seq:
        if op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT):
            lo, hi, item = av
            ff = f if only is None or only == n[0] else 0
            n[0] += 1
            item = _transform(item, f, e, only, n)
            if hi == _sre_c.MAXREPEAT:
                lo, hi = lo + ff, (_sre_c.MAXREPEAT if e is None else lo + ff + e)
            else:
                lo = min(lo + ff, hi)
            out.append((op, (lo, hi, item)))
        elif op is _sre_c.BRANCH:
            out.append((op, (av[0], [_transform(b, f, e, only, n) for b in av[1]])))
        elif op is _sre_c.SUBPATTERN:
            out.append((op, (*av[:3], _transform(av[3], f, e, only, n))))
        else:
            out.append((op, av))
    return _sre_p.SubPattern(_sre_p.State(), out)


def _repeats(seq) -> int:
    return sum(1 for op, _ in _walk(seq) if op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT))


def _walk(seq):
    for op, av in seq:
        yield op, av
        if op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT):
            yield from _walk(av[2])
        elif op is _sre_c.BRANCH:
            for b in av[1]:
                yield from _walk(b)
        elif op is _sre_c.SUBPATTERN:
            yield from _walk(av[3])


def _width(seq) -> tuple[int, int]:
    lo, hi = seq.getwidth()
    return lo, (_INF if hi >= _sre_c.MAXREPEAT else hi)


def _fit_with(core, f: int, only: int | None, free: bool, begins: bool, ends: bool, lo: int,
              hi: int | None) -> str | None:
    top = _INF if hi is None else hi
    t = _transform(core, f, None, only)
    wmin, wmax = _width(t)
    if wmin > top or (not free and wmin < lo):
        return None
    pad_lo = max(0, lo - wmin) if free else 0
    chosen = t
    if hi is not None and wmax > top - pad_lo:  # largest e with max width <= top - pad_lo
        a, b = -1, top
        while a < b:
            m = (a + b + 1) // 2
            if _width(_transform(core, f, m, only))[1] <= top - pad_lo:
                a = m
            else:
                b = m - 1
        if a < 0:
            return None
        chosen = _transform(core, f, a, only)
    wmin, wmax = _width(chosen)
    if hi is None:
        pad = f"{SAFE_CHAR}{{{pad_lo}}}{STRING_CHAR}*" if pad_lo else STRING_CHAR + "*"
    else:
        pad = f"{SAFE_CHAR}{{{pad_lo},{top - wmax}}}" if free else ""
    pre = pad if ends and not begins else STRING_CHAR + "*" if not begins and hi is None else ""
    post = "" if ends else pad
    return pre + _emit(chosen) + post


def _fit(items, begins: bool, ends: bool, lo: int, hi: int | None) -> str:
    """Regex (JSON string content) for strings matching one anchored/unanchored branch with
    decoded length in [lo, hi]."""
    core = _sre_p.SubPattern(_sre_p.State(), list(items))
    free = not (begins and ends)  # a side where padding keeps the search hit
    # Lengthen as little as possible: no change, then one repeat at a time, then all of them.
    for only in [-1, *range(_repeats(core)), None]:
        prev = None
        for f in range(0 if only == -1 else 1, (0 if only == -1 else max(lo, 0)) + 1):
            out = _fit_with(core, f, only, free, begins, ends, lo, hi)
            if out is not None:
                return out
            wmin = _width(_transform(core, f, None, only))[0]
            if wmin == prev or wmin >= lo:
                break  # lengthening this repeat further cannot help
            prev = wmin
    raise UnsupportedSchema("no string of the allowed length matches the pattern")


def pattern_with_length(pattern: str, lo: int, hi: int | None, *, anchored: bool = False) -> str:
    """Regex over JSON string content: strings matching `pattern` (ECMA search semantics, or a
    full match when `anchored`, as for our format regexes) whose decoded length is in [lo, hi].
    Sound, and a subset of those strings (see the module docstring)."""
    items = list(parse_pattern(pattern))
    if anchored:
        return _fit(items, True, True, lo, hi)
    if len(items) == 1 and items[0][0] is _sre_c.BRANCH:
        branches = [list(b) for b in items[0][1][1]]
    else:
        branches = [items]
    out = []
    for b in branches:
        begins = bool(b) and b[0][0] is _sre_c.AT and b[0][1] in (_sre_c.AT_BEGINNING, _sre_c.AT_BEGINNING_STRING)
        b = b[1:] if begins else b
        ends = bool(b) and b[-1][0] is _sre_c.AT and b[-1][1] in (_sre_c.AT_END, _sre_c.AT_END_STRING)
        b = b[:-1] if ends else b
        try:
            out.append(_fit(b, begins, ends, lo, hi))
        except UnsupportedSchema:
            if len(branches) == 1:
                raise
    if not out:
        raise UnsupportedSchema("no string of the allowed length matches the pattern")
    return out[0] if len(out) == 1 else "(?:" + "|".join(out) + ")"


def string_except(values: list[str]) -> str:
    """Regex (JSON string content) for escape-free strings not in `values` (a finite set)."""
    def build(strs: set[str]) -> str:
        firsts = sorted({s[0] for s in strs if s})
        alts = [re.escape(c) + "(?:" + build({s[1:] for s in strs if s and s[0] == c}) + ")" for c in firsts
                if c not in '"\\' and 0x20 <= ord(c) and not 0x7F <= ord(c) <= 0x9F]
        excl = "".join(re.escape(c) for c in firsts)
        alts.append((f'[^{excl}"\\\\\\x00-\\x1F\\x7F-\\x9F]' if excl else SAFE_CHAR) + SAFE_CHAR + "*")
        nonempty = "|".join(alts)
        return f"(?:{nonempty})" if "" in strs else f"(?:|{nonempty})"

    return build(set(values))
