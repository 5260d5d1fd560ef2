"""Unit tests of the server's layers without processes: detokenizer, validation, error shapes."""

from __future__ import annotations

import pickle
import shutil
import time

import pytest

from arborlm.runtime.server.detokenizer_process import Detokenizer
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


def test_scheduler_loop_with_fake(tmp_path) -> None:
    """The scheduler process's loop, in-process: rejects become 400 outputs, aborts finish once,
    each rid's first output carries its detokenizer init, RPCs answer."""
    import zmq
    from fake_scheduler import FakeScheduler

    from arborlm.runtime.config import EngineConfig
    from arborlm.runtime.server.io_struct import AbortReq, IpcNames, RpcReq
    from arborlm.runtime.server.scheduler_process import SchedulerLoop

    ipc = IpcNames.create()
    ctx = zmq.Context()
    detok_in, main_in = ctx.socket(zmq.PULL), ctx.socket(zmq.PULL)
    detok_in.bind(ipc.detokenizer_in)
    main_in.bind(ipc.main_in)
    loop = SchedulerLoop(FakeScheduler(EngineConfig(max_total_tokens=4096)), ipc, ctx)
    send = ctx.socket(zmq.PUSH)
    send.connect(ipc.scheduler_in)
    try:
        send.send_pyobj(TokenizedRequest("ok", [1, 2, 3], SamplingParams(max_new_tokens=50)))
        send.send_pyobj(TokenizedRequest("bad", [1], SamplingParams(max_new_tokens=-1)))
        send.send_pyobj(RpcReq(7, "stats"))
        time.sleep(0.2)
        loop.run_once()
        first = detok_in.recv_pyobj()
        assert {o.rid for o in first.outputs} == {"ok", "bad"} and set(first.inits) == {"ok", "bad"}
        bad = next(o for o in first.outputs if o.rid == "bad")
        assert bad.finished and bad.error.code == 400 and bad.error.param == "max_new_tokens"
        assert main_in.recv_pyobj().result["num_waiting"] == 1  # answered before the step ran
        send.send_pyobj(AbortReq("ok"))
        time.sleep(0.2)
        for _ in range(3):
            loop.run_once()
        assert detok_in.poll(1000)
        outs = detok_in.recv_pyobj().outputs
        assert [(o.rid, o.finished, o.finish_reason.kind) for o in outs] == [("ok", True, "abort")]
        assert not loop.live and not loop.sched.has_work()
        assert not detok_in.poll(100)  # nothing more: the abort was reported exactly once
    finally:
        ctx.destroy(linger=0)
        shutil.rmtree(ipc.tmpdir, ignore_errors=True)


def test_scheduler_loop_isolates_a_failing_request() -> None:
    """The server's scheduler process keeps serving when one request's sampling raises: that
    request finishes with a 500 error, the other gets its full output (issue 11, defect 2)."""
    import sys
    from pathlib import Path

    import zmq

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "runtime"))
    from fake_runner import expected_output, make_scheduler

    from arborlm.runtime.server.io_struct import IpcNames
    from arborlm.runtime.server.scheduler_process import SchedulerLoop

    ipc = IpcNames.create()
    ctx = zmq.Context()
    detok_in, main_in = ctx.socket(zmq.PULL), ctx.socket(zmq.PULL)
    detok_in.bind(ipc.detokenizer_in)
    main_in.bind(ipc.main_in)
    sched = make_scheduler(256, max_running_requests=4)
    sched.sample_fn.failing.add("bad")
    loop = SchedulerLoop(sched, ipc, ctx)
    send = ctx.socket(zmq.PUSH)
    send.connect(ipc.scheduler_in)
    try:
        send.send_pyobj(TokenizedRequest("ok", [1, 2, 3], SamplingParams(max_new_tokens=6, ignore_eos=True)))
        send.send_pyobj(TokenizedRequest("bad", [4, 5], SamplingParams(max_new_tokens=6, ignore_eos=True)))
        time.sleep(0.2)
        outs = []
        for _ in range(20):
            loop.run_once()
            while detok_in.poll(10):
                outs.extend(detok_in.recv_pyobj().outputs)
        bad = [o for o in outs if o.rid == "bad"]
        assert len(bad) == 1 and bad[0].finished and bad[0].error.code == 500
        assert [t for o in outs if o.rid == "ok" for t in o.new_token_ids] == expected_output([1, 2, 3], 6)
        assert not loop.live and not sched.has_work()
        sched.check_invariants()
    finally:
        ctx.destroy(linger=0)
        shutil.rmtree(ipc.tmpdir, ignore_errors=True)
