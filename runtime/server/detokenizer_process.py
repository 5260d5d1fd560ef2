"""The detokenizer process: token ids → text deltas, one IncrementalDetokenizer per request.

A separate process so decoding (pure Python for many tokenizers) never delays a scheduler step.
"""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

import zmq

from arborlm.runtime.detokenize import IncrementalDetokenizer
from arborlm.runtime.server.io_struct import BatchTextOutput, BatchTokenOutput, IpcNames, TextOutput
from arborlm.runtime.server.scheduler_process import PARENT_CHECK_MS, become_child_process

logger = logging.getLogger("arborlm.detokenizer")


class Detokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.states: dict[str, IncrementalDetokenizer] = {}

    def process(self, batch: BatchTokenOutput) -> BatchTextOutput:
        out: list[TextOutput] = []
        for o in batch.outputs:
            init = batch.inits.get(o.rid)
            if init is not None:
                self.states[o.rid] = IncrementalDetokenizer(
                    self.tokenizer, init.skip_special_tokens, init.stop, init.prompt_tail_ids
                )
            detok = self.states.get(o.rid)
            text = ""
            if detok is not None:
                text = detok.add(list(o.new_token_ids))
                if o.finished:
                    text += detok.finish(o.finish_reason)
            if o.finished:
                self.states.pop(o.rid, None)
            out.append(TextOutput(o.rid, text, list(o.new_token_ids), o.finished, o.finish_reason,
                                  o.logprobs, o.top_logprobs, o.usage, o.error))
        return BatchTextOutput(out)


def run_detokenizer_process(tokenizer_path: str, ipc: IpcNames, log_level: str) -> None:
    parent_pid = become_child_process("detokenizer", log_level)
    from transformers import AutoTokenizer

    detok = Detokenizer(AutoTokenizer.from_pretrained(tokenizer_path))
    ctx = zmq.Context()
    recv = ctx.socket(zmq.PULL)
    recv.bind(ipc.detokenizer_in)
    send = ctx.socket(zmq.PUSH)
    send.connect(ipc.main_in)
    try:
        while True:
            if not recv.poll(PARENT_CHECK_MS):
                if os.getppid() != parent_pid:
                    return
                continue
            batch = recv.recv_pyobj()
            send.send_pyobj(detok.process(batch))
    except Exception:
        logger.error("detokenizer crashed:\n%s", traceback.format_exc())
        raise SystemExit(1) from None
