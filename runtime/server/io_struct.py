"""The small dataclasses the server's three processes exchange over zmq (pickled).

    main ──TokenizedRequest / AbortReq / RpcReq──► scheduler
    scheduler ──BatchTokenOutput──► detokenizer ──BatchTextOutput──► main
    scheduler ──RpcReply──► main (flush_cache, stats: they need no detokenization)
    scheduler ──SchedulerReady / SchedulerInitError──► main (once, on the startup socket)

Kept free of torch and of the tokenizer so every process can import it cheaply.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from arborlm.runtime.types import FinishReason, RequestError, SamplingParams, StepOutput, Usage


@dataclass
class IpcNames:
    """ipc:// endpoints in one private temp dir; the receiving side of each binds."""

    tmpdir: str
    scheduler_in: str
    detokenizer_in: str
    main_in: str
    startup: str

    @classmethod
    def create(cls) -> IpcNames:
        d = tempfile.mkdtemp(prefix="arborlm-ipc-")
        return cls(d, *(f"ipc://{os.path.join(d, n)}" for n in ("sched", "detok", "main", "startup")))


# ---- main → scheduler ----


@dataclass
class TokenizedRequest:
    rid: str
    input_ids: list[int]
    params: SamplingParams
    stream: bool = False


@dataclass
class AbortReq:
    rid: str


@dataclass
class RpcReq:
    """A control call answered by the scheduler process with RpcReply(call_id, ...)."""

    call_id: int
    method: str  # "flush_cache" | "stats" | "check_invariants"


@dataclass
class RpcReply:
    call_id: int
    result: Any = None
    error: str | None = None


# ---- scheduler → detokenizer ----


@dataclass
class DetokInit:
    """What the detokenizer needs to start a request's text stream; sent with its first output."""

    skip_special_tokens: bool
    stop: list[str]
    prompt_tail_ids: list[int]


@dataclass
class BatchTokenOutput:
    outputs: list[StepOutput]
    inits: dict[str, DetokInit] = field(default_factory=dict)


# ---- detokenizer → main ----


@dataclass
class TextOutput:
    """A StepOutput with its text: the same fields (logprobs belong to this output's tokens)."""

    rid: str
    text: str  # the new text delta, safe to show (UTF-8 complete, held back before stop strings)
    new_token_ids: list[int]
    finished: bool
    finish_reason: FinishReason | None = None
    logprobs: list[float | None] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    usage: Usage | None = None
    error: RequestError | None = None


@dataclass
class BatchTextOutput:
    outputs: list[TextOutput]


# ---- startup handshake (scheduler → main) ----


@dataclass
class SchedulerReady:
    model_info: dict[str, Any]
    tokenizer_path: str
    max_context_len: int
    vocab_size: int
    eos_token_ids: list[int]


@dataclass
class SchedulerInitError:
    message: str
