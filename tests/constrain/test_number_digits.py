"""Bounded JSON numbers (issue 12): numbers and integers without a bound get at most N integral and
N fraction digits and a 2-digit exponent (N = json_number_digits, default 15); explicit
minimum/maximum keep their exact range; 0 switches the bound off."""

from __future__ import annotations

import re

import pytest

from arborlm.constrain import schema_to_regex
from arborlm.constrain.number_digits import DEFAULT_JSON_NUMBER_DIGITS, check_number_digits
from arborlm.runtime.config import EngineConfig
from arborlm.runtime.types import SamplingParams


def accepts(schema: dict, text: str, digits: int = DEFAULT_JSON_NUMBER_DIGITS) -> bool:
    return re.fullmatch(schema_to_regex(schema, number_digits=digits), text) is not None


def test_default_is_exact_in_a_double() -> None:
    # every integer of up to 15 digits is exact in an IEEE double; 16 digits are not all
    assert DEFAULT_JSON_NUMBER_DIGITS == 15
    assert float(10**15 - 1) == 10**15 - 1 and float(9999999999999999) != 9999999999999999


@pytest.mark.parametrize("text,ok", [
    ("0", True), ("-7", True), ("9" * 15, True), ("1" + "0" * 15, False), ("-" + "9" * 15, True),
    ("3.25", True), ("0." + "1" * 15, True), ("0." + "1" * 16, False), ("1e99", True), ("1E-5", True),
    ("1e100", False), ("1.5e+07", True), ("01", False),
])
def test_unbounded_number(text: str, ok: bool) -> None:
    assert accepts({"type": "number"}, text) is ok


def test_integers_and_one_sided_ranges() -> None:
    assert accepts({"type": "integer"}, "9" * 15) and not accepts({"type": "integer"}, "9" * 16)
    assert not accepts({"type": "integer"}, "1.5")
    pos = {"type": "integer", "minimum": 0}
    assert accepts(pos, "9" * 15) and not accepts(pos, "1" + "0" * 15) and not accepts(pos, "-1")
    neg = {"type": "integer", "maximum": -3}
    assert accepts(neg, "-" + "9" * 15) and not accepts(neg, "-2")
    big = {"type": "integer", "minimum": 10**20}  # the open side is capped above the bound's width
    assert accepts(big, str(10**20)) and accepts(big, "9" * 21) and not accepts(big, str(10**20 - 1))
    num = {"type": "number", "exclusiveMinimum": 0}
    assert accepts(num, "0.5") and accepts(num, "9" * 15 + ".5") and not accepts(num, "1" + "0" * 15)


def test_explicit_bounds_stay_exact_and_fractions_are_bounded() -> None:
    wide = {"type": "integer", "minimum": -5, "maximum": 10**20}
    assert accepts(wide, str(10**20)) and accepts(wide, "-5") and not accepts(wide, "-6")
    wand = {"type": "number", "minimum": 5, "maximum": 20}
    assert accepts(wand, "12.75") and accepts(wand, "20.0") and not accepts(wand, "20.5")
    assert accepts(wand, "5." + "1" * 15) and not accepts(wand, "5." + "1" * 16)


def test_free_form_values_are_bounded_too() -> None:
    for schema in ({"type": "object"}, {}, {"type": "array"}):
        regex = schema_to_regex(schema)
        assert "[0-9]*" not in regex and "[0-9]+" not in regex.replace(r"\.[0-9]+", "")
        assert not re.fullmatch(regex, '{"a":' + "1" * 16 + "}")
    assert re.fullmatch(schema_to_regex({"type": "object"}), '{"a":' + "1" * 15 + "}")


def test_zero_switches_the_bound_off() -> None:
    assert accepts({"type": "number"}, "1" + "0" * 40, digits=0)
    assert accepts({"type": "integer", "minimum": 0}, "1" + "0" * 40, digits=0)
    assert accepts({"type": "object"}, '{"a":' + "1" * 30 + "}", digits=0)


def test_validation_names_the_parameter() -> None:
    for bad in (-1, 401, True, "3"):
        with pytest.raises(ValueError, match="json_number_digits"):
            check_number_digits(bad)
        with pytest.raises(ValueError, match="json_number_digits"):
            SamplingParams(json_number_digits=bad).validate()
        with pytest.raises(ValueError, match="json_number_digits"):
            EngineConfig(json_number_digits=bad)
    SamplingParams(json_number_digits=0).validate()
    with pytest.raises(ValueError, match="grammar_backend"):
        EngineConfig(grammar_backend="xgrammar")
