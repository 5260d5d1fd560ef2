"""Server soak (`-m slow`): thousands of requests at high concurrency through the `openai` client,
with client disconnects and bad inputs mixed in. The server must stay up, every completed response
must be whole (greedy text equal to the reference computed alone before the soak), every bad input
must be a 400, and afterwards the KV accounting must be back to its baseline (0 leaked slots).

Knobs (environment): SOAK_REQUESTS (2000), SOAK_CONCURRENCY (32), SOAK_TINY_TEMPERATURES: `all`
(default: temperatures below 1e-38 with and without a grammar), `plain` (without a grammar only:
with one, such a temperature kills a scheduler that lacks the sampler's clamp) or `none`. The
figures are printed as one JSON line (run with `-s` to see them).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import openai
import pytest
from server_helpers import ServerProc, start_server

NUM_REQUESTS = int(os.environ.get("SOAK_REQUESTS", "2000"))
CONCURRENCY = int(os.environ.get("SOAK_CONCURRENCY", "32"))
TINY_TEMPERATURES = os.environ.get("SOAK_TINY_TEMPERATURES", "all")
assert TINY_TEMPERATURES in ("all", "plain", "none"), TINY_TEMPERATURES
MAX_TOKENS = 8
PROMPTS = [f"Request {i}: the {w} sat on the mat and" for i, w in enumerate(
    ["cat", "dog", "bird", "fox", "owl", "cow", "pig", "ant", "bee", "elk", "yak", "emu"])]


@dataclass
class Outcome:
    kind: str  # ok | rejected | aborted | tiny_temperature_ok | FAIL:<why>
    detail: str = ""


@pytest.fixture(scope="module")
def soak_server(tiny_model_path: str, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(tiny_model_path, tmp_path_factory.mktemp("soak"), "--max-total-tokens", "8192",
                       "--max-running-requests", "32", "--dtype", "float32", "--log-level", "warning")
    yield srv
    srv.stop()


def scheduler_stats(c: httpx.Client) -> dict:
    return c.get("/get_server_info").json()["scheduler"]


def wait_idle(c: httpx.Client, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        s = scheduler_stats(c)
        if s["num_running"] == 0 and s["num_waiting"] == 0:
            return s
        assert time.monotonic() < deadline, s
        time.sleep(0.2)


class Soak:
    def __init__(self, srv: ServerProc, references: dict[str, str]) -> None:
        self.srv = srv
        self.oai = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=300)
        self.references = references
        self.local = threading.local()

    def http(self) -> httpx.Client:
        if not hasattr(self.local, "client"):
            self.local.client = httpx.Client(base_url=self.srv.url, timeout=300)
        return self.local.client

    def whole(self, prompt: str, text: str, finish: str | None, n_tokens: int | None) -> Outcome:
        if finish != "length" or (n_tokens is not None and n_tokens != MAX_TOKENS):
            return Outcome("FAIL:incomplete", f"finish={finish} tokens={n_tokens}")
        if text != self.references[prompt]:
            return Outcome("FAIL:text", f"{text!r} != {self.references[prompt]!r}")
        return Outcome("ok")

    # ---- request kinds: each returns an Outcome and never raises ----

    def completion(self, rng: random.Random) -> Outcome:
        prompt = rng.choice(PROMPTS)
        r = self.oai.completions.create(model="m", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                                        extra_body={"ignore_eos": True})
        return self.whole(prompt, r.choices[0].text, r.choices[0].finish_reason, r.usage.completion_tokens)

    def completion_stream(self, rng: random.Random) -> Outcome:
        prompt = rng.choice(PROMPTS)
        parts, finish, usage = [], None, None
        for chunk in self.oai.completions.create(model="m", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}):
            if chunk.choices:
                parts.append(chunk.choices[0].text)
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage is not None:
                usage = chunk.usage.completion_tokens
        return self.whole(prompt, "".join(parts), finish, usage)

    def chat(self, rng: random.Random) -> Outcome:
        r = self.oai.chat.completions.create(model="m", messages=[{"role": "user", "content": rng.choice(PROMPTS)}],
                                             max_tokens=MAX_TOKENS, temperature=0, extra_body={"ignore_eos": True})
        c = r.choices[0]
        if c.finish_reason != "length" or r.usage.completion_tokens != MAX_TOKENS:
            return Outcome("FAIL:incomplete", f"chat finish={c.finish_reason} usage={r.usage}")
        return Outcome("ok")

    def disconnect_mid_stream(self, rng: random.Random) -> Outcome:
        stream = self.oai.completions.create(model="m", prompt=rng.choice(PROMPTS), max_tokens=400,
                                             stream=True, extra_body={"ignore_eos": True})
        for _ in stream:
            break
        stream.close()  # the client goes away after the first chunk
        return Outcome("aborted")

    def disconnect_early(self, rng: random.Random) -> Outcome:
        body = {"prompt": rng.choice(PROMPTS), "max_tokens": 400, "stream": rng.random() < 0.5, "ignore_eos": True}
        try:  # gives up before (or right as) the first byte arrives
            httpx.post(f"{self.srv.url}/v1/completions", json=body, timeout=rng.uniform(0.001, 0.2))
        except httpx.TimeoutException:
            return Outcome("aborted")
        return Outcome("ok")  # it finished in time (the response was whole by status)

    def tiny_temperature(self, rng: random.Random) -> Outcome:
        extra = {"ignore_eos": True}
        if TINY_TEMPERATURES == "all" and rng.random() < 0.5:
            extra["regex"] = "[a-z ]+"
        try:
            r = self.oai.completions.create(model="m", prompt=rng.choice(PROMPTS), max_tokens=MAX_TOKENS,
                                            temperature=rng.choice([1e-39, 1e-45, 5e-40]), extra_body=extra)
        except openai.BadRequestError:
            return Outcome("rejected")
        c = r.choices[0]
        ok = c.finish_reason in ("length", "stop") and r.usage.completion_tokens >= 1
        return Outcome("tiny_temperature_ok" if ok else "FAIL:incomplete", f"{c.finish_reason} {r.usage}")

    def rid_collision(self, rng: random.Random) -> Outcome:
        rid = f"soak-dup-{rng.randrange(10**9)}"
        r = self.http().post("/generate", json={"text": ["a", "b"], "rid": [rid, rid],
                                                "sampling_params": {"max_new_tokens": 400, "ignore_eos": True}})
        return Outcome("rejected") if r.status_code == 400 else Outcome("FAIL:status", f"{r.status_code} {r.text}")

    def invalid_schema(self, rng: random.Random) -> Outcome:
        bad = rng.choice([
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
                "type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}}}},
            {"regex": "(unclosed"},
            {"json_schema": {"type": "no-such-type"}},
        ])
        try:
            self.oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                             stream=rng.random() < 0.5, extra_body=bad)
        except openai.BadRequestError:
            return Outcome("rejected")
        return Outcome("FAIL:accepted", json.dumps(bad))

    def one(self, seed: int) -> Outcome:
        rng = random.Random(seed)
        kinds: list[tuple[float, Callable[[random.Random], Outcome]]] = [
            (0.10, self.disconnect_mid_stream), (0.10, self.disconnect_early), (0.05, self.rid_collision),
            (0.05, self.invalid_schema), (0.0 if TINY_TEMPERATURES == "none" else 0.05, self.tiny_temperature),
            (0.10, self.chat), (0.25, self.completion_stream), (1.0, self.completion)]
        x, fn = rng.random(), kinds[-1][1]
        for p, kind in kinds:
            if x < p:
                fn = kind
                break
            x -= p
        try:
            return fn(rng)
        except Exception as e:  # any client-visible error that is not a 400 is a failure
            return Outcome(f"FAIL:{type(e).__name__}", str(e)[:300])


@pytest.mark.slow
def test_soak(soak_server: ServerProc) -> None:
    with soak_server.client(timeout=300) as c:
        references = {}
        for prompt in PROMPTS:  # each alone, before any concurrency: the greedy reference
            r = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
                                                "ignore_eos": True})
            references[prompt] = r.json()["choices"][0]["text"]
        base = wait_idle(c)
        soak = Soak(soak_server, references)
        t0 = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            outcomes = list(pool.map(soak.one, range(NUM_REQUESTS)))
        wall_s = time.monotonic() - t0
        assert soak_server.proc.poll() is None, "the server died"
        assert c.get("/health").status_code == 200
        after = wait_idle(c)
        counts = Counter(o.kind for o in outcomes)
        leaked = (after["kv_used_tokens"] - after["tokens_in_tree"]) - (base["kv_used_tokens"] - base["tokens_in_tree"])
        report = {"soak": "openai", "requests": NUM_REQUESTS, "concurrency": CONCURRENCY, "wall_s": round(wall_s, 1),
                  "outcomes": dict(sorted(counts.items())), "leaked_slots": leaked,
                  "protected_tokens_after": after.get("protected_tokens", 0), "tiny_temperatures": TINY_TEMPERATURES,
                  "free_slots_before": base["free_slots"], "free_slots_after": after["free_slots"],
                  "tokens_in_tree_after": after["tokens_in_tree"]}
        print(json.dumps(report), flush=True)
        failures = [o for o in outcomes if o.kind.startswith("FAIL")]
        assert not failures, (report, [(o.kind, o.detail) for o in failures[:10]])
        assert leaked == 0 and after.get("protected_tokens", 0) == 0, report
        assert after["free_slots"] + after["tokens_in_tree"] == after["kv_total_tokens"], report
        # and it still serves
        r = c.post("/v1/completions", json={"prompt": PROMPTS[0], "max_tokens": MAX_TOKENS, "temperature": 0,
                                            "ignore_eos": True})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == references[PROMPTS[0]]
