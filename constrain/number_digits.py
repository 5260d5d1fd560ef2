"""Bounded JSON numbers: how many digits a number may have when the schema sets no bound.

A schema's `{"type": "number"}` admits `100000000000…` of any length, and a small model happily
keeps emitting zeros until the token limit (issue 12: 22 of 50 character cards ran away). The
data type itself implies a bound: JSON numbers are read as IEEE-754 doubles by JavaScript's
`JSON.parse`, by most JSON libraries and by Python's `json` for fractions. So, with the default
`DEFAULT_JSON_NUMBER_DIGITS = 15`:

- integral part: at most 15 digits. Every integer below 10**15 is exact in a double (2**53 is
  about 9.007e15), so `JSON.parse` returns exactly the integer written; 16 digits would already
  allow 9999999999999999, which a double rounds to 10000000000000000.
- fraction: at most 15 digits. DBL_DIG = 15: any decimal of up to 15 significant digits survives
  text -> double -> text unchanged; more digits are noise the reader cannot keep.
- exponent: at most `EXPONENT_DIGITS` = 2 digits (|e| <= 99), so every emitted number is finite
  (at most about 1e114, far below the double maximum 1.8e308).

This is a *sound narrowing* (every emitted number still validates; see schema.py's table). Explicit
`minimum` / `maximum` keep their exact range (only the side without a bound is capped, at 10**N);
the fraction cap applies to bounded numbers too. `json_number_digits=0` (engine option or
per-request) switches the bound off.
"""

from __future__ import annotations

DEFAULT_JSON_NUMBER_DIGITS = 15
EXPONENT_DIGITS = 2
MAX_JSON_NUMBER_DIGITS = 400  # beyond any double (1.8e308 has 309 integral digits)

# outlines-core's free-form number and integer regexes (build_regex_from_schema), replaced wholesale
# in its output; the integer one is a substring of the number one, so numbers go first.
OUTLINES_NUMBER = r"((-)?(0|[1-9][0-9]*))(\.[0-9]+)?([eE][+-][0-9]+)?"
OUTLINES_INTEGER = r"(-)?(0|[1-9][0-9]*)"


def check_number_digits(value: object, name: str = "json_number_digits") -> int:
    """`value` as a digit count, or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_JSON_NUMBER_DIGITS:
        raise ValueError(f"{name}={value!r} is invalid: must be an integer in [0, {MAX_JSON_NUMBER_DIGITS}] "
                         "(0: no digit bound)")
    return value


def integer_regex(num_digits: int) -> str:
    """JSON integers with at most `num_digits` digits (0: unbounded)."""
    if num_digits == 0:
        return OUTLINES_INTEGER
    rest = f"[0-9]{{0,{num_digits - 1}}}" if num_digits > 1 else ""
    return f"(-)?(0|[1-9]{rest})"


def fraction_regex(num_digits: int) -> str:
    """An optional fraction of at most `num_digits` digits (0: unbounded)."""
    return r"(\.[0-9]+)?" if num_digits == 0 else rf"(\.[0-9]{{1,{num_digits}}})?"


def number_regex(num_digits: int) -> str:
    """JSON numbers: at most `num_digits` integral and fraction digits, a 2-digit exponent."""
    if num_digits == 0:
        return OUTLINES_NUMBER
    return (f"({integer_regex(num_digits)}){fraction_regex(num_digits)}"
            f"([eE][+-]?[0-9]{{1,{EXPONENT_DIGITS}}})?")


def bound_free_numbers(regex: str, num_digits: int) -> str:
    """outlines-core's output with its free-form numbers bounded (numbers inside `{}` / free-form
    objects and arrays, and plain `{"type": "number"}` / `"integer"`)."""
    if num_digits == 0:
        return regex
    regex = regex.replace(OUTLINES_NUMBER, number_regex(num_digits))
    return regex.replace(OUTLINES_INTEGER, integer_regex(num_digits))


def max_magnitude(num_digits: int, bound: int) -> int:
    """The cap for an open side of a range whose other side is `bound`: 10**num_digits - 1, or,
    when `bound` itself is wider, 10**len(digits of bound) - 1 (so the range never empties)."""
    width = max(num_digits, len(str(abs(bound))))
    return 10**width - 1

