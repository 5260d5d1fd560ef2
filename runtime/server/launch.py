"""`arborlm serve`: start the scheduler and detokenizer processes, then FastAPI on uvicorn.

Lifetime rules: children die with the parent (PR_SET_PDEATHSIG, plus a parent check when idle);
SIGINT / SIGTERM stop uvicorn gracefully and then the children; a child that dies makes /health
answer 503 and, after a short grace, the server exit non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import multiprocessing as mp
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from arborlm.runtime.config import EngineConfig

logger = logging.getLogger("arborlm.server")
DEATH_GRACE_S = 2.0  # keep answering 503 this long after a child died, then exit
STARTUP_TIMEOUT_S = 900.0


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    d = EngineConfig()
    p = sub.add_parser(
        "serve", help="run the HTTP server (native /generate and the OpenAI-compatible API)",
        description="Serve a model over HTTP: POST /generate, /v1/completions, /v1/chat/completions, "
                    "GET /v1/models, /health, /metrics, ...", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=d.model, help="embedded model name ('smollm2') or a local HF model folder")
    p.add_argument("--served-model-name", default=None, help="model id reported by /v1/models (default: --model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=30000, help="TCP port to listen on")
    p.add_argument("--dtype", default=d.dtype, choices=["auto", "float32", "bfloat16", "float16"],
                   help="weight / activation dtype ('auto': bfloat16 on GPUs and bf16-capable CPUs)")
    p.add_argument("--device", default=d.device, help="torch device, e.g. cpu or cuda")
    p.add_argument("--max-total-tokens", type=int, default=d.max_total_tokens,
                   help="KV cache size in tokens, shared by running requests and the radix cache")
    p.add_argument("--max-running-requests", type=int, default=d.max_running_requests,
                   help="most requests decoding at once")
    p.add_argument("--max-context-len", type=int, default=None,
                   help="longest prompt + completion (default: the model's max_position_embeddings)")
    p.add_argument("--max-prefill-tokens", type=int, default=d.max_prefill_tokens,
                   help="prefill token budget per scheduler step")
    p.add_argument("--chunked-prefill-size", type=int, default=d.chunked_prefill_size,
                   help="split long prompts into chunks of this many tokens (0: no chunking)")
    p.add_argument("--schedule-policy", default=d.schedule_policy, choices=["lpm", "fcfs"],
                   help="waiting-queue order: lpm = longest cached prefix first, fcfs = arrival order")
    p.add_argument("--disable-radix-cache", action="store_true", help="do not reuse KV across requests")
    p.add_argument("--disable-jump-forward", action="store_true",
                   help="do not append grammar-forced text without sampling")
    p.add_argument("--quantization", default="none", choices=["none", "int8", "int4", "gguf"], help="weight-only quantization of the linear layers (see kernels/README_quant.md)")
    p.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads in the scheduler")
    p.add_argument("--random-seed", type=int, default=d.random_seed, help="seed of the default sampler RNG")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route except /health")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level of all server processes (info: one line per finished request)")
    # Tests plug a fake scheduler in here; it must offer Scheduler's interface.
    p.add_argument("--scheduler-factory", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=serve)


def engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        model=args.model, dtype=args.dtype, device=args.device, max_total_tokens=args.max_total_tokens,
        max_running_requests=args.max_running_requests, max_context_len=args.max_context_len,
        max_prefill_tokens=args.max_prefill_tokens, chunked_prefill_size=args.chunked_prefill_size,
        schedule_policy=args.schedule_policy, disable_radix_cache=args.disable_radix_cache,
        jump_forward=not args.disable_jump_forward, num_threads=args.num_threads, random_seed=args.random_seed,
        quantization=args.quantization,
    )


def _wait_ready(sock: Any, proc: mp.process.BaseProcess) -> Any:
    from arborlm.runtime.server.io_struct import SchedulerInitError

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if sock.poll(200):
            msg = sock.recv_pyobj()
            if isinstance(msg, SchedulerInitError):
                raise RuntimeError(f"the scheduler failed to start: {msg.message}")
            return msg
        if not proc.is_alive():
            raise RuntimeError(f"the scheduler process exited during startup (exit code {proc.exitcode})")
    raise RuntimeError(f"the scheduler did not start within {STARTUP_TIMEOUT_S:.0f}s")


def _stop_children(procs: list[mp.process.BaseProcess]) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 5.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def serve(args: argparse.Namespace) -> int:
    import uvicorn
    import zmq
    from transformers import AutoTokenizer

    from arborlm.runtime.server.detokenizer_process import run_detokenizer_process
    from arborlm.runtime.server.http_server import ServerState, create_app
    from arborlm.runtime.server.io_struct import IpcNames
    from arborlm.runtime.server.scheduler_process import DEFAULT_SCHEDULER, run_scheduler_process
    from arborlm.runtime.server.tokenizer_manager import TokenizerManager

    logging.basicConfig(level=args.log_level.upper(), format="[%(asctime)s main] %(levelname)s %(message)s")
    try:
        config = engine_config(args)
    except ValueError as e:
        print(f"arborlm serve: {e}", file=sys.stderr)
        return 2
    # Our handlers first: uvicorn restores them after its graceful shutdown and re-raises the
    # signal it caught; it must land here (so we can stop the children), not kill us outright.
    got_signal: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: got_signal.append(s))

    ipc = IpcNames.create()
    ctx = mp.get_context("spawn")  # fork after torch / zmq threads is unsafe
    procs: list[mp.process.BaseProcess] = []
    zctx = zmq.Context()
    exit_code = 0
    try:
        startup = zctx.socket(zmq.PULL)
        startup.bind(ipc.startup)
        sched = ctx.Process(target=run_scheduler_process, name="arborlm-scheduler", daemon=True,
                            args=(config, ipc, args.scheduler_factory or DEFAULT_SCHEDULER, args.log_level))
        sched.start()
        procs.append(sched)
        try:
            ready = _wait_ready(startup, sched)
        except RuntimeError as e:
            logger.error("%s", e)
            return 1
        finally:
            startup.close(linger=0)
        detok = ctx.Process(target=run_detokenizer_process, name="arborlm-detokenizer", daemon=True,
                            args=(ready.tokenizer_path, ipc, args.log_level))
        detok.start()
        procs.append(detok)
        tokenizer = AutoTokenizer.from_pretrained(ready.tokenizer_path)
        tm = TokenizerManager(tokenizer, ipc, ready.max_context_len, ready.vocab_size,
                              max_total_tokens=ready.model_info.get("max_total_tokens"))
        server_args = {k: v for k, v in vars(args).items() if k not in ("func", "api_key")}
        server_args["engine_config"] = dataclasses.asdict(config)
        state = ServerState(tm, args.served_model_name or args.model, dict(ready.model_info), server_args,
                            args.api_key)
        holder: dict[str, Any] = {}

        @asynccontextmanager
        async def lifespan(_app: Any) -> AsyncIterator[None]:
            await tm.start()
            watch = asyncio.create_task(_watchdog(procs, tm, holder))
            logger.info("serving %s on http://%s:%d (max_context_len=%d)", state.model_name, args.host, args.port,
                        ready.max_context_len)
            try:
                yield
            finally:
                watch.cancel()
                await tm.stop()

        app = create_app(state, lifespan)
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                               access_log=args.log_level == "debug", timeout_graceful_shutdown=3,
                                               lifespan="on"))
        holder["server"] = server
        server.run()
        if holder.get("failed"):
            exit_code = 1
        elif not server.started:  # e.g. the port was taken
            exit_code = 1
    finally:
        _stop_children(procs)
        zctx.destroy(linger=0)
        shutil.rmtree(ipc.tmpdir, ignore_errors=True)
    logger.info("server stopped%s", f" (signal {got_signal[0]})" if got_signal else "")
    return exit_code


async def _watchdog(procs: list[mp.process.BaseProcess], tm: Any, holder: dict[str, Any]) -> None:
    """A dead child means lost requests: fail them, answer 503, then stop with a non-zero exit."""
    while True:
        await asyncio.sleep(0.2)
        if holder["server"].should_exit:
            return  # shutting down on a signal: children stopping now is expected
        dead = [p for p in procs if not p.is_alive()]
        if dead:
            await asyncio.sleep(0.3)  # a group-wide SIGTERM reaches us a moment later: not a failure
            if holder["server"].should_exit:
                return
            reason = ", ".join(f"{p.name} exited with code {p.exitcode}" for p in dead)
            logger.error("child process died (%s): failing requests and shutting down", reason)
            tm.fail_all(f"server unavailable: {reason}")
            holder["failed"] = True
            await asyncio.sleep(DEATH_GRACE_S)
            holder["server"].should_exit = True
            return
