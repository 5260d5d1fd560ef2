"""A model-free stand-in obeying the Scheduler contract (plumbing tests; `--scheduler-factory`)."""

from __future__ import annotations

import os
import time
from typing import Any

from arborlm.runtime.types import FinishReason, Req, RequestError, StepOutput, Usage

WORDS = " the quick brown fox jumps over the lazy dog ü 🙂"


class FakeScheduler:
    @classmethod
    def from_config(cls, config: Any) -> FakeScheduler:
        return cls(config)

    def __init__(self, config: Any) -> None:
        from transformers import AutoTokenizer

        from arborlm.runtime.model_loader import resolve_model_path

        self.path = resolve_model_path(config.model, config.cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.max_context_len = config.max_context_len or 2048
        self.vocab_size = len(self.tokenizer)
        self.eos_token_ids = {int(self.tokenizer.eos_token_id)}
        self.kv_total = config.max_total_tokens
        self.words = self.tokenizer.encode(WORDS, add_special_tokens=False)
        self.waiting: list[Req] = []
        self.running: dict[str, Req] = {}
        self.aborted: list[Req] = []
        self.delay = float(os.environ.get("FAKE_STEP_DELAY", "0.005"))

    def model_info(self) -> dict[str, Any]:
        return {"model": "fake", "path": self.path, "dtype": "none", "max_context_len": self.max_context_len,
                "vocab_size": self.vocab_size}

    def add_request(self, req: Req) -> None:
        req.params.validate(self.vocab_size)
        if len(req.input_ids) + req.params.max_new_tokens > self.max_context_len:
            raise ValueError("too long")
        self.waiting.append(req)

    def abort_request(self, rid: str) -> bool:
        for r in self.waiting:
            if r.rid == rid:
                self.waiting.remove(r)
                self.aborted.append(r)
                return True
        if rid in self.running:
            self.aborted.append(self.running.pop(rid))
            return True
        return False

    def kv_used(self) -> int:
        return sum(r.seq_len for r in self.running.values())

    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.aborted)

    def _finish(self, r: Req, reason: FinishReason, new: list[int], lps: list[Any] | None = None,
                error: RequestError | None = None) -> StepOutput:
        lp, top = lps or ([], [])
        return StepOutput(r.rid, new, True, reason, lp, top, Usage(len(r.input_ids), 0, len(r.output_ids)), error)

    def step(self) -> list[StepOutput]:
        time.sleep(self.delay)
        outs = [self._finish(r, FinishReason("abort", message="aborted"), []) for r in self.aborted]
        self.aborted.clear()
        while self.waiting and self.kv_used() + self.waiting[0].seq_len + 1 <= self.kv_total:
            r = self.waiting.pop(0)
            if r.params.regex == "(":
                msg = "invalid regex '(': missing )"
                outs.append(self._finish(r, FinishReason("abort", message=msg), [],
                                         error=RequestError(msg, "invalid_request_error", 400)))
                continue
            self.running[r.rid] = r
        for r in list(self.running.values()):
            if r.params.max_new_tokens == 0:
                del self.running[r.rid]
                outs.append(self._finish(r, FinishReason("length"), []))
                continue
            tid = self.words[len(r.output_ids) % len(self.words)]
            r.output_ids.append(tid)
            lps: list[Any] = [[], []]
            if r.params.return_logprob:
                lps = [[-0.5], [[(tid, -0.5)] * r.params.top_logprobs_num]]
            if len(r.output_ids) >= r.params.max_new_tokens:
                del self.running[r.rid]
                outs.append(self._finish(r, FinishReason("length"), [tid], lps))
            else:
                outs.append(StepOutput(r.rid, [tid], False, None, *lps))
        return outs

    def flush_cache(self) -> bool:
        return not self.running and not self.waiting

    def stats(self) -> dict[str, Any]:
        return {"num_running": len(self.running), "num_waiting": len(self.waiting), "kv_used_tokens": self.kv_used(),
                "kv_total_tokens": self.kv_total, "cache_hit_rate": 0.0, "tokens_in_tree": 0,
                "free_slots": self.kv_total - self.kv_used()}

    def check_invariants(self) -> None:
        pass
