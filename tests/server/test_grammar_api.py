"""Issue 12 through the HTTP API on the default model, on both grammar engines (`serve
--grammar-backend`): a Pydantic `int` field through `client.chat.completions.parse()` ends with
finish_reason stop (bounded numbers), and `ebnf` grammars work through /generate,
/v1/completions and /v1/chat/completions (llguidance) or fail with a 400 naming the engine to use
(outlines)."""

from __future__ import annotations

import lark
import openai
import pydantic
import pytest
from server_helpers import ServerProc, start_server

ARITHMETIC = r"""
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")"
NUMBER: /[0-9]{1,6}/
"""


class City(pydantic.BaseModel):
    name: str
    country: str
    population: int


@pytest.fixture(scope="module", params=["llguidance", "outlines"])
def engine_server(request, smollm2_path: str, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server("smollm2", tmp_path_factory.mktemp(f"grammar-{request.param}"), "--max-total-tokens", "4096",
                       "--dtype", "float32", "--grammar-backend", request.param)
    srv.extra["grammar_backend"] = request.param
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def oai(engine_server: ServerProc) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{engine_server.url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_pydantic_int_field_parse(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.parse(
        model="smollm2", temperature=0, max_tokens=100, response_format=City,
        messages=[{"role": "user", "content": "Give the name, country and population of Paris as JSON."}])
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    city = r.choices[0].message.parsed
    assert isinstance(city, City) and isinstance(city.population, int) and city.population < 10**15


def test_ebnf_through_every_route(engine_server: ServerProc, oai: openai.OpenAI) -> None:
    parser = lark.Lark(ARITHMETIC)
    question = [{"role": "user", "content": "Write an arithmetic expression that equals 10."}]
    if engine_server.extra["grammar_backend"] == "outlines":
        with pytest.raises(openai.BadRequestError, match="ebnf grammars need grammar_backend='llguidance'"):
            oai.chat.completions.create(model="smollm2", messages=question, max_tokens=30,
                                        extra_body={"ebnf": ARITHMETIC})
        return
    r = oai.chat.completions.create(model="smollm2", messages=question, temperature=0, max_tokens=40,
                                    extra_body={"ebnf": ARITHMETIC})
    assert r.choices[0].finish_reason == "stop"
    parser.parse(r.choices[0].message.content)
    c = oai.completions.create(model="smollm2", prompt="2 + 2 =", temperature=0, max_tokens=20,
                               extra_body={"ebnf": ARITHMETIC})
    assert c.choices[0].finish_reason in ("stop", "length")
    if c.choices[0].finish_reason == "stop":
        parser.parse(c.choices[0].text)
    with engine_server.client(timeout=300) as client:
        g = client.post("/generate", json={"text": "Arithmetic: ", "sampling_params": {
            "ebnf": ARITHMETIC, "temperature": 0, "max_new_tokens": 30}})
        assert g.status_code == 200, g.text
        body = g.json()
        if body["meta_info"]["finish_reason"]["type"] == "stop":
            parser.parse(body["text"])
        bad = client.post("/generate", json={"text": "x", "sampling_params": {"ebnf": "start: nowhere"}})
        assert bad.status_code == 400 and "llguidance error in the ebnf grammar" in bad.json()["error"]["message"]
