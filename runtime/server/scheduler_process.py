"""The scheduler process: the same `Scheduler.step()` loop the offline Engine runs, fed by zmq.

Idle, it blocks on its socket (no busy spin); busy, it drains every pending message before each
step so aborts and new arrivals join the very next batch.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import traceback
from typing import Any

import zmq

from arborlm.runtime.config import EngineConfig
from arborlm.runtime.server.io_struct import (
    AbortReq,
    BatchTokenOutput,
    DetokInit,
    IpcNames,
    RpcReply,
    RpcReq,
    SchedulerInitError,
    SchedulerReady,
    TokenizedRequest,
)
from arborlm.runtime.types import FinishReason, Req, RequestError, StepOutput, Usage

logger = logging.getLogger("arborlm.scheduler")

DEFAULT_SCHEDULER = "arborlm.runtime.scheduler:Scheduler"
PARENT_CHECK_MS = 1000  # how often an idle child looks for its parent (orphan guard)


def become_child_process(name: str, log_level: str) -> int:
    """Common child setup: die with the parent, leave Ctrl-C to the parent, log like it."""
    try:  # Linux: the kernel kills us when the parent dies, even by SIGKILL
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; a terminal ^C hits us all
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    logging.basicConfig(level=log_level.upper(), format=f"[%(asctime)s {name}] %(levelname)s %(message)s")
    return os.getppid()


def load_factory(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _model_info(sched: Any) -> dict[str, Any]:
    try:
        return dict(sched.model_info())
    except Exception:  # model_info is informative only
        return {}


class SchedulerLoop:
    def __init__(self, sched: Any, ipc: IpcNames, ctx: zmq.Context) -> None:
        self.sched = sched
        self.recv = ctx.socket(zmq.PULL)
        self.recv.bind(ipc.scheduler_in)
        self.to_detok = ctx.socket(zmq.PUSH)
        self.to_detok.connect(ipc.detokenizer_in)
        self.to_main = ctx.socket(zmq.PUSH)
        self.to_main.connect(ipc.main_in)
        self.live: set[str] = set()  # rids added and not yet reported finished
        self.pending_inits: dict[str, DetokInit] = {}  # sent with each rid's first output
        self.pending_aborts: dict[str, int] = {}  # rid -> steps left before we report it ourselves
        self.immediate: list[StepOutput] = []  # outputs produced outside step() (rejections)

    def run(self, parent_pid: int) -> None:
        poller = zmq.Poller()
        poller.register(self.recv, zmq.POLLIN)
        while True:
            busy = self.sched.has_work() or bool(self.pending_aborts) or bool(self.immediate)
            if not busy and not poller.poll(PARENT_CHECK_MS) and os.getppid() != parent_pid:
                logger.warning("parent process is gone; exiting")
                return
            self.run_once()

    def run_once(self) -> None:
        self.drain()
        outputs = list(self.immediate)
        self.immediate.clear()
        if self.sched.has_work():
            outputs.extend(self.sched.step())
        self.settle_aborts(outputs)
        if outputs:
            self.publish(outputs)

    def drain(self) -> None:
        while True:
            try:
                msg = self.recv.recv_pyobj(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle(msg)

    def handle(self, msg: Any) -> None:
        if isinstance(msg, TokenizedRequest):
            self.add(msg)
        elif isinstance(msg, AbortReq):
            if msg.rid in self.live and self.sched.abort_request(msg.rid):
                self.pending_aborts[msg.rid] = 2
        elif isinstance(msg, RpcReq):
            self.to_main.send_pyobj(self.rpc(msg))
        else:
            logger.error("unknown message %r", type(msg).__name__)

    def add(self, msg: TokenizedRequest) -> None:
        p = msg.params
        self.pending_inits[msg.rid] = DetokInit(p.skip_special_tokens, list(p.stop), msg.input_ids[-4:])
        self.live.add(msg.rid)
        try:
            self.sched.add_request(Req(msg.rid, list(msg.input_ids), p))
        except Exception as e:  # ValueError: the scheduler's own checks, a client error (400)
            if isinstance(e, ValueError):
                err = RequestError(str(e), "invalid_request_error", 400, getattr(e, "param", None))
            else:  # a bug: fail this request, keep serving the others
                logger.exception("add_request(%s) failed", msg.rid)
                err = RequestError(f"{type(e).__name__}: {e}")
            self.immediate.append(StepOutput(msg.rid, [], True, FinishReason("abort", message=str(e)),
                                             usage=Usage(len(msg.input_ids)), error=err))

    def rpc(self, msg: RpcReq) -> RpcReply:
        try:
            if msg.method == "flush_cache":
                return RpcReply(msg.call_id, bool(self.sched.flush_cache()))
            if msg.method == "stats":
                return RpcReply(msg.call_id, dict(self.sched.stats()))
            if msg.method == "check_invariants":
                self.sched.check_invariants()
                return RpcReply(msg.call_id, True)
            return RpcReply(msg.call_id, error=f"unknown method {msg.method!r}")
        except Exception as e:  # report, keep serving
            return RpcReply(msg.call_id, error=f"{type(e).__name__}: {e}")

    def settle_aborts(self, outputs: list[StepOutput]) -> None:
        """An aborted request must report finished exactly once, even if the scheduler dropped it
        without a step output (e.g. it was still waiting)."""
        for out in outputs:
            if out.finished:
                self.pending_aborts.pop(out.rid, None)
        idle = not self.sched.has_work()
        for rid in sorted(self.pending_aborts):
            self.pending_aborts[rid] -= 1
            if idle or self.pending_aborts[rid] <= 0:
                del self.pending_aborts[rid]
                outputs.append(StepOutput(rid, [], True, FinishReason("abort", message="aborted")))

    def publish(self, outputs: list[StepOutput]) -> None:
        inits: dict[str, DetokInit] = {}
        kept: list[StepOutput] = []
        for out in outputs:
            if out.rid not in self.live:
                continue  # already reported finished (a late duplicate)
            kept.append(out)
            if out.rid in self.pending_inits:
                inits[out.rid] = self.pending_inits.pop(out.rid)
            if out.finished:
                self.live.discard(out.rid)
        if kept:
            self.to_detok.send_pyobj(BatchTokenOutput(kept, inits))


def run_scheduler_process(config: EngineConfig, ipc: IpcNames, factory_spec: str, log_level: str) -> None:
    parent_pid = become_child_process("scheduler", log_level)
    ctx = zmq.Context()
    startup = ctx.socket(zmq.PUSH)
    startup.connect(ipc.startup)
    try:
        sched = load_factory(factory_spec).from_config(config)
        tok = sched.tokenizer
        ready = SchedulerReady(
            model_info=_model_info(sched),
            tokenizer_path=str(getattr(tok, "name_or_path", "") or ""),
            max_context_len=int(sched.max_context_len),
            vocab_size=int(sched.vocab_size),
            eos_token_ids=sorted(int(t) for t in sched.eos_token_ids),
        )
        loop = SchedulerLoop(sched, ipc, ctx)
    except Exception as e:
        logger.error("scheduler failed to start:\n%s", traceback.format_exc())
        startup.send_pyobj(SchedulerInitError(f"{type(e).__name__}: {e}"))
        startup.close(linger=2000)
        sys.exit(1)
    startup.send_pyobj(ready)
    startup.close(linger=2000)
    try:
        loop.run(parent_pid)
    except Exception:
        logger.error("scheduler crashed:\n%s", traceback.format_exc())
        sys.exit(1)
