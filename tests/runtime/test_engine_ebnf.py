"""`ebnf` grammars (Lark / GBNF text) through the Engine on the default model, compiled by the
llguidance engine: every finished output parses with the independent `lark` parser; the outlines
engine rejects them with an error naming the engine to use."""

from __future__ import annotations

import lark
import pytest

from arborlm.runtime import Engine

ARITHMETIC = r"""
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")"
NUMBER: /[0-9]{1,6}/
"""
SQL_SELECT = r"""
start: "SELECT " columns " FROM " NAME where? ";"
columns: "*" | NAME (", " NAME)*
where: " WHERE " NAME OP value
OP: "=" | "<" | ">" | "<=" | ">=" | "!="
value: NUMBER | STRING
NAME: /[a-z_][a-z0-9_]{0,15}/
NUMBER: /[0-9]{1,6}/
STRING: /'[a-zA-Z0-9 ]{0,20}'/
"""
JSON_LIKE = r"""
start: value
value: object | array | STRING | NUMBER | "true" | "false" | "null"
object: "{" [pair ("," pair)*] "}"
pair: STRING ":" value
array: "[" [value ("," value)*] "]"
STRING: /"[a-zA-Z0-9 ]{0,20}"/
NUMBER: /-?[0-9]{1,6}(\.[0-9]{1,4})?/
"""
CASES = {
    "arithmetic": (ARITHMETIC, ["Write an arithmetic expression that equals 10.", "Give a long formula with parentheses."]),
    "sql": (SQL_SELECT, ["Write a SQL query listing the names of users older than 30.",
                         "Find the product called 'lamp'."]),
    "json_like": (JSON_LIKE, ["Describe a cat as JSON.", "Give nested JSON describing a library with books."]),
}


def chat(tok, text: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


@pytest.fixture(scope="module")
def engine(smollm2_path: str):
    eng = Engine(model=smollm2_path, dtype="float32", max_total_tokens=8192, grammar_backend="llguidance")
    yield eng
    eng.shutdown()


@pytest.mark.parametrize("name", list(CASES))
def test_ebnf_outputs_parse_with_lark(engine: Engine, name: str) -> None:
    grammar, questions = CASES[name]
    parser = lark.Lark(grammar, start="start")
    prompts = [chat(engine.tokenizer, q) for q in questions]
    finished = 0
    for temperature in (0.0, 1.0):
        outs = engine.generate(prompts, {"ebnf": grammar, "temperature": temperature, "seed": 7, "max_new_tokens": 48})
        for o in outs:
            if o["meta"]["finish_reason"]["type"] == "stop":
                parser.parse(o["text"])  # raises on any output the grammar does not derive
                finished += 1
            else:  # cut by the token limit: still a prefix the grammar can continue
                assert o["meta"]["finish_reason"]["type"] == "length"
    assert finished >= len(prompts)


def test_gbnf_grammar(engine: Engine) -> None:
    out = engine.generate(chat(engine.tokenizer, "Is the sky blue? Answer yes or no."),
                          {"ebnf": 'root ::= ("yes" | "no") "."', "temperature": 0})
    assert out["text"] in ("yes.", "no.") and out["meta"]["finish_reason"]["type"] == "stop"


def test_ebnf_errors_name_the_problem(engine: Engine, smollm2_path: str) -> None:
    with pytest.raises(ValueError, match="llguidance error in the ebnf grammar"):
        engine.generate("x", {"ebnf": "start: missing_rule"})
    with pytest.raises(ValueError, match="ebnf.*must be a non-empty grammar text"):
        engine.generate("x", {"ebnf": "  "})
    with pytest.raises(ValueError, match="mutually exclusive"):
        engine.generate("x", {"ebnf": ARITHMETIC, "regex": "a"})
    eng = Engine(model=smollm2_path, dtype="float32", max_total_tokens=2048, grammar_backend="outlines")
    try:
        with pytest.raises(ValueError, match="ebnf grammars need grammar_backend='llguidance'"):
            eng.generate("x", {"ebnf": ARITHMETIC})
    finally:
        eng.shutdown()
