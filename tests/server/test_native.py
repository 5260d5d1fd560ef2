"""Native routes against the shared tiny-model server."""

from __future__ import annotations

import json
import threading
import time

import httpx
from server_helpers import ServerProc


def sse_events(resp: httpx.Response) -> list[dict]:
    out = []
    for line in resp.iter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def test_generate_text(client: httpx.Client) -> None:
    r = client.post("/generate", json={"text": "Hello there", "sampling_params": {"max_new_tokens": 5,
                                                                              "temperature": 0, "ignore_eos": True}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["text"], str) and len(body["output_ids"]) == 5
    m = body["meta_info"]
    assert m["completion_tokens"] == 5 and m["prompt_tokens"] >= 2 and "cached_tokens" in m
    assert m["finish_reason"]["type"] == "length"


def test_generate_batch_ids_logprobs(client: httpx.Client) -> None:
    r = client.post("/generate", json={
        "input_ids": [[1, 2, 3, 4], [5, 6, 7]], "return_logprob": True, "top_logprobs_num": 2,
        "logprob_start_len": 0, "sampling_params": {"max_new_tokens": 3, "temperature": 0, "ignore_eos": True}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list) and len(body) == 2
    for item in body:
        m = item["meta_info"]
        assert len(m["output_token_logprobs"]) == 3
        lp, tid, _text = m["output_token_logprobs"][0]
        assert lp <= 0 and isinstance(tid, int)
        assert len(m["output_top_logprobs"][0]) == 2
        assert "input_token_logprobs" in m


def test_generate_greedy_is_deterministic(client: httpx.Client) -> None:
    req = {"text": "Once upon a time", "sampling_params": {"max_new_tokens": 6, "temperature": 0,
                                                             "ignore_eos": True}}
    a, b = (client.post("/generate", json=req).json() for _ in range(2))
    assert a["output_ids"] == b["output_ids"]
    assert b["meta_info"]["cached_tokens"] > 0  # the second one hits the radix cache


def test_generate_stream_matches_non_stream(client: httpx.Client) -> None:
    sp = {"max_new_tokens": 12, "temperature": 0, "ignore_eos": True}
    full = client.post("/generate", json={"text": "A B C", "sampling_params": sp}).json()
    with client.stream("POST", "/generate", json={"text": "A B C", "sampling_params": sp, "stream": True}) as r:
        assert r.status_code == 200
        events = sse_events(r)
    assert "".join(e["delta"] for e in events) == full["text"] == events[-1]["text"]
    assert events[-1]["meta_info"]["finish_reason"]["type"] == "length"


def test_model_and_server_info(client: httpx.Client, server: ServerProc) -> None:
    info = client.get("/get_model_info").json()
    assert info["max_context_len"] > 0 and info["vocab_size"] > 0
    si = client.get("/get_server_info").json()
    assert {"num_running", "num_waiting", "kv_used_tokens", "kv_total_tokens"} <= set(si["scheduler"])
    assert "api_key" not in si["server_args"]
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"]


def test_health_routes(client: httpx.Client, server: ServerProc) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200  # no key needed
    r = client.get("/health_generate")
    assert r.status_code == 200 and len(r.json()["output_ids"]) == 1


def test_metrics(client: httpx.Client) -> None:
    client.post("/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 2}})
    text = client.get("/metrics").text
    for name in ("arborlm_num_running_reqs", "arborlm_num_waiting_reqs", "arborlm_kv_cache_usage_ratio",
                 "arborlm_cache_hit_rate", "arborlm_prompt_tokens_total", "arborlm_generation_tokens_total",
                 "arborlm_time_to_first_token_seconds_bucket", "arborlm_inter_token_latency_seconds_bucket",
                 "arborlm_e2e_request_latency_seconds_bucket"):
        assert name in text, name


def _long_stream(server: ServerProc, got_first: threading.Event, stop: threading.Event,
                 rid: str | None = None) -> None:
    body = {"text": "count forever", "stream": True,
            "sampling_params": {"max_new_tokens": 1500, "ignore_eos": True}}
    if rid:
        body["rid"] = rid
    with server.client() as c, c.stream("POST", "/generate", json=body) as r:
        for _ in r.iter_lines():
            got_first.set()
            if stop.is_set():
                return  # leaving the block closes the connection mid-stream


def kv_state(c: httpx.Client) -> dict:
    return c.get("/get_server_info").json()["scheduler"]


def wait_idle(c: httpx.Client, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = kv_state(c)
        if s["num_running"] == 0 and s["num_waiting"] == 0:
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.1)


def test_disconnect_releases_kv(client: httpx.Client, server: ServerProc) -> None:
    base = wait_idle(client)
    got_first, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=_long_stream, args=(server, got_first, stop))
    t.start()
    assert got_first.wait(60)
    mid = kv_state(client)
    assert mid["num_running"] == 1
    stop.set()
    t.join(30)
    after = wait_idle(client)
    # Everything the request held went back: free, or unlocked (evictable) cache.
    assert after.get("protected_tokens", 0) == 0
    assert after["kv_used_tokens"] - after["tokens_in_tree"] == base["kv_used_tokens"] - base["tokens_in_tree"]
    assert after["kv_used_tokens"] < mid["kv_total_tokens"]


def test_flush_cache_409_while_running_and_abort(client: httpx.Client, server: ServerProc) -> None:
    wait_idle(client)
    got_first, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=_long_stream, args=(server, got_first, stop, "flush-test-rid"))
    t.start()
    try:
        assert got_first.wait(60)
        r = client.post("/flush_cache")
        assert r.status_code == 409 and r.json()["error"]["message"]
        assert client.post("/abort_request", json={"rid": "flush-test-rid"}).json() == {"success": True}
        t.join(30)
        assert not t.is_alive()  # the stream ended (finish reason abort)
    finally:
        stop.set()
        t.join(30)
    wait_idle(client)
    assert client.post("/flush_cache").status_code == 200
    assert kv_state(client)["tokens_in_tree"] == 0
    assert client.post("/abort_request", json={"rid": "no-such"}).status_code == 404


def test_prompt_logprobs_with_start_match_start_zero(client: httpx.Client) -> None:
    """logprob_start_len > 0 reports the same values as start = 0 for the same prompt positions."""
    ids = [400, 401, 402, 403, 404, 405, 406]

    def input_lps(start: int) -> list[list]:
        client.post("/flush_cache")  # no cached prefix: each run computes every position it reports
        r = client.post("/generate", json={"input_ids": ids, "return_logprob": True, "logprob_start_len": start,
                                           "sampling_params": {"max_new_tokens": 1, "temperature": 0}})
        assert r.status_code == 200, r.text
        return r.json()["meta_info"]["input_token_logprobs"]

    full, part = input_lps(0), input_lps(3)
    assert [e[1] for e in full] == ids and [e[1] for e in part] == ids[3:]
    assert full[0][0] is None and all(isinstance(e[0], float) for e in full[1:])
    assert part[0][0] is None  # its logits position (2) is before the start
    for got, want in zip(part[1:], full[4:], strict=True):
        assert abs(got[0] - want[0]) < 1e-3, (part, full)


def test_batch_with_duplicate_rids_is_400_and_leaves_nothing_running(client: httpx.Client) -> None:
    wait_idle(client)
    r = client.post("/generate", json={"text": ["one", "two"], "rid": ["dup", "dup"],
                                       "sampling_params": {"max_new_tokens": 1000, "ignore_eos": True}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "rid", r.text
    s = kv_state(client)
    assert s["num_running"] == 0 and s["num_waiting"] == 0, s
    assert client.post("/abort_request", json={"rid": "dup"}).status_code == 404  # not registered
    r = client.post("/generate", json={"text": "three", "rid": "dup", "sampling_params": {"max_new_tokens": 2}})
    assert r.status_code == 200 and r.json()["meta_info"]["id"] == "dup"
