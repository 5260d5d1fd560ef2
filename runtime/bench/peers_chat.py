"""`arborlm bench peers`: multi-turn chat through the HTTP servers — `arborlm serve` and llama-cpp-
python's OpenAI-compatible server (with `interrupt_requests` off: its default silently truncates a
running stream when a new request arrives) — driven by `arborlm bench serving`'s streaming load
generator: MT-Bench questions, two turns (the second sent after the first answer), greedy.

Each server runs in its own process, started once per workload and stopped after it; before each
timed run arborlm's radix cache is flushed (llama.cpp holds one sequence's KV and reuses its prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import httpx

from arborlm.runtime.bench.peers_report import RunMeasurement
from arborlm.runtime.bench.peers_systems import LLAMA_N_CTX, PeerContext
from arborlm.runtime.bench.serving import Conversation, bench_one, build_dataset
from arborlm.runtime.pyproc import python_module_argv

SERVER_START_TIMEOUT_S = 600.0


@dataclass
class ChatInputs:
    conversations: list[Conversation]
    concurrency: int
    max_new_tokens: int


def chat_inputs(num_conversations: int, concurrency: int, max_new_tokens: int) -> ChatInputs:
    args = argparse.Namespace(seed=0, num_prompts=num_conversations, dataset="mt-bench", dataset_path=None,
                              output_len=max_new_tokens)
    return ChatInputs(build_dataset(args), concurrency, max_new_tokens)


class ServerProcess:
    """A server subprocess on a local port, up once GET `health_path` answers 200."""

    def __init__(self, argv: list[str], port: int, health_path: str, log_path: str) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_healthy(health_path, log_path)

    def _wait_healthy(self, health_path: str, log_path: str) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with code {self.proc.returncode} during startup (log: {log_path})")
            if self._answers(health_path):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server not healthy within {SERVER_START_TIMEOUT_S:.0f}s (log: {log_path})")

    def _answers(self, path: str) -> bool:
        try:
            return httpx.get(self.base_url + path, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False  # not listening yet

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def _start_arborlm(ctx: PeerContext) -> ServerProcess:
    port = ctx.args.port_base
    argv = [*python_module_argv("arborlm.runtime.cli"), "serve", "--model", ctx.args.model, "--dtype", ctx.args.dtype,
            "--port", str(port), "--num-threads", str(ctx.threads), "--max-total-tokens", str(ctx.args.max_total_tokens),
            "--log-level", "warning"]
    return ServerProcess(argv, port, "/health", os.path.join(ctx.args.log_dir, "arborlm-serve.log"))


def _start_llama_cpp(ctx: PeerContext) -> ServerProcess:
    port = ctx.args.port_base + 1
    argv = [*python_module_argv("arborlm.runtime.bench.peers_llama_server"), "--model", str(ctx.gguf_path()),
            "--port", str(port), "--n_ctx", str(LLAMA_N_CTX), "--n_threads", str(ctx.threads),
            "--n_threads_batch", str(ctx.threads), "--interrupt_requests", "False", "--verbose", "False"]
    return ServerProcess(argv, port, "/v1/models", os.path.join(ctx.args.log_dir, "llama-cpp-server.log"))


SERVER_STARTERS = {"arborlm": _start_arborlm, "llama.cpp": _start_llama_cpp}


def _server(ctx: PeerContext, system: str) -> ServerProcess:
    key = f"server:{system}"
    if key not in ctx.cache:
        ctx.cache[key] = SERVER_STARTERS[system](ctx)
    return ctx.cache[key]


def stop_servers(ctx: PeerContext) -> None:
    for key in [k for k in ctx.cache if k.startswith("server:")]:
        ctx.cache.pop(key).stop()


def _load_args(inputs: ChatInputs) -> argparse.Namespace:
    """The settings `serving.bench_one` reads: fixed concurrency, all conversations at once."""
    return argparse.Namespace(api_key=None, timeout=600.0, model=None, warmup=0, concurrency=inputs.concurrency,
                              seed=0, request_rate=float("inf"), temperature=0.0, no_ignore_eos=True, dataset="mt-bench")


def _run_chat(ctx: PeerContext, system: str, inputs: ChatInputs) -> RunMeasurement:
    server = _server(ctx, system)
    if system == "arborlm":
        httpx.post(server.base_url + "/flush_cache", timeout=30.0).raise_for_status()
    line: dict[str, Any] = asyncio.run(bench_one(_load_args(inputs), server.base_url, inputs.conversations))
    if line["errors"]:
        raise RuntimeError(f"{system}: {line['errors']} failed requests, e.g. {line['error_samples']}")
    run = RunMeasurement(wall_s=line["duration_s"], output_tokens=line["total_output_tokens"],
                         prompt_tokens=line["total_input_tokens"],
                         cached_tokens=round(line["cached_token_share"] * line["total_input_tokens"]))
    run.timings = {"ttft_p50_ms": line["ttft_ms"]["p50"], "ttft_p99_ms": line["ttft_ms"]["p99"],
                   "itl_p50_ms": line["itl_ms"]["p50"], "itl_p99_ms": line["itl_ms"]["p99"]}
    run.notes = {"concurrency": inputs.concurrency, "num_requests": line["num_requests"]}
    return run


def chat_arborlm(ctx: PeerContext, inputs: ChatInputs) -> RunMeasurement:
    return _run_chat(ctx, "arborlm", inputs)


def chat_llama_cpp(ctx: PeerContext, inputs: ChatInputs) -> RunMeasurement:
    run = _run_chat(ctx, "llama.cpp", inputs)
    run.notes["cached_tokens_reported"] = run.cached_tokens > 0  # its usage may not carry prompt_tokens_details
    return run
