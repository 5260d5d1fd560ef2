"""Unit tests of the server's layers without processes: detokenizer, validation, error shapes."""

from __future__ import annotations

import pickle

import pytest

from arborlm.runtime.server.detokenizer_process import Detokenizer, rollback
from arborlm.runtime.server.io_struct import BatchTokenOutput, DetokInit, TokenizedRequest
from arborlm.runtime.server.openai_api import build_params
from arborlm.runtime.server.protocol import ApiError, ChatCompletionRequest
from arborlm.runtime.types import FinishReason, SamplingParams, StepOutput


def _run(detok: Detokenizer, rid: str, chunks: list[list[int]], stop: list[str] | None = None,
         finish: FinishReason | None = None) -> str:
    text = ""
    for k, ids in enumerate(chunks):
        last = k == len(chunks) - 1
        init = {rid: DetokInit(True, stop or [], [])} if k == 0 else {}
        out = detok.process(BatchTokenOutput([StepOutput(rid, ids, last, finish if last else None)], init))
        text += out.outputs[0].text
    return text


def test_detokenizer_utf8_across_tokens(tokenizer) -> None:
    s = "héllo 🙂 wörld 日本語"
    ids = tokenizer.encode(s, add_special_tokens=False)
    detok = Detokenizer(tokenizer)
    assert _run(detok, "a", [[t] for t in ids], finish=FinishReason("length")) == s
    assert not detok.states  # finished requests are forgotten


def test_detokenizer_stop_string_trimmed(tokenizer) -> None:
    ids = tokenizer.encode("one two STOP three", add_special_tokens=False)
    out = _run(Detokenizer(tokenizer), "b", [[t] for t in ids], stop=["STOP"],
               finish=FinishReason("stop", matched="STOP"))
    assert out == "one two "


def test_rollback_keeps_text(tokenizer) -> None:
    """Jump-forward replaces reported ids with a re-tokenization of the same text."""
    from arborlm.runtime.detokenize import IncrementalDetokenizer

    a = tokenizer.encode('{"name', add_special_tokens=False)
    b = tokenizer.encode('{"name": "', add_special_tokens=False)
    d = IncrementalDetokenizer(tokenizer)
    got = d.add(a)
    rollback(d, 1)
    got += d.add(b[len(a) - 1:])
    got += d.finish(FinishReason("length"))
    assert got == '{"name": "'


def test_messages_pickle() -> None:
    msg = TokenizedRequest("r", [1, 2], SamplingParams(max_new_tokens=3, stop=["x"]), True)
    assert pickle.loads(pickle.dumps(msg)) == msg


def test_response_format_mapping() -> None:
    req = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}],
                                                "response_format": {"type": "json_schema", "json_schema": {
                                                    "name": "p", "schema": {"type": "integer"}}}})
    assert build_params(req, 5, None)["json_schema"] == {"type": "integer"}
    req = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}],
                                                "response_format": {"type": "json_object"}, "stop": "END"})
    d = build_params(req, 5, 2)
    assert d["json_schema"] == {"type": "object"} and d["stop"] == ["END"] and d["top_logprobs_num"] == 2
    with pytest.raises(ApiError):
        build_params(ChatCompletionRequest.model_validate(
            {"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 5}}), 5, None)
