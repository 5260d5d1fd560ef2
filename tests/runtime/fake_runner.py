"""A model-free runner and sampler for Scheduler / KVManager tests.

`SlotCheckingRunner` plays the ModelRunner contract (see `Batch` in runtime/types.py) without a
model: each K/V slot "holds" the token sequence it was computed for (`fill_ids[:pos + 1]`), so a
forward can check that every slot a row reads is live (not on the free list, not the padding
slot) and holds exactly the prefix that row expects (not stale, not another request's). Slots
written twice in one forward are duplicates. The "logits" are row indices; `HashSampler` turns a
row into a deterministic token of the request's sequence, so outputs do not depend on batching,
chunking or retraction, like greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from arborlm.runtime.config import EngineConfig
from arborlm.runtime.scheduler import Scheduler
from arborlm.runtime.types import Batch, Req

VOCAB_SIZE = 50
EOS_ID = 0


class SlotViolation(AssertionError):
    """A step read a KV slot that is free, padding, stale or written for another sequence."""


class SlotCheckingRunner:
    def __init__(self, num_slots: int, max_context_len: int = 4096) -> None:
        self.num_slots = num_slots
        self.max_context_len = max_context_len
        self.vocab_size = VOCAB_SIZE
        self.contents: dict[int, tuple[int, ...]] = {}  # slot -> the sequence whose last K/V it holds
        self.kv: Any = None  # the scheduler's KVManager, set by `make_scheduler`
        self.num_forwards = 0

    def forward(self, batch: Batch) -> np.ndarray:
        self.num_forwards += 1
        free = self.kv.slots.free_set()
        written: dict[int, str] = {}
        rows = []
        for req, ext in zip(batch.reqs, batch.extend_lens, strict=True):
            ids = req.fill_ids
            kv_len = len(req.slot_ids)
            start = kv_len - ext
            if ext < 1 or start < 0 or kv_len > req.seq_len:
                raise SlotViolation(f"{req.rid}: extend {ext} does not fit kv_len {kv_len}, seq_len {req.seq_len}")
            if len(set(req.slot_ids)) != kv_len:
                raise SlotViolation(f"{req.rid}: a slot appears twice in its own slot_ids")
            for pos, slot in enumerate(req.slot_ids[:start]):  # the cached / earlier K/V this row reads
                if slot == 0 or slot in free:
                    raise SlotViolation(f"{req.rid} reads slot {slot} (position {pos}) that is free or padding")
                if self.contents.get(slot) != tuple(ids[: pos + 1]):
                    raise SlotViolation(f"{req.rid} reads stale slot {slot} at position {pos}")
            for pos in range(start, kv_len):
                slot = req.slot_ids[pos]
                if slot == 0 or slot in free:
                    raise SlotViolation(f"{req.rid} writes slot {slot} that is free or padding")
                if slot in written:
                    raise SlotViolation(f"slot {slot} written by {written[slot]} and {req.rid} in one forward")
                written[slot] = req.rid
            rows.append((req, start, kv_len))
        for req, start, kv_len in rows:  # writes land after every read of this forward was checked
            ids = req.fill_ids
            for pos in range(start, kv_len):
                self.contents[req.slot_ids[pos]] = tuple(ids[: pos + 1])
        return np.arange(len(batch) + sum(batch.verify_lens or []))


@dataclass
class FakeSample:
    next_token_ids: list[int]
    logprobs: list[float | None]
    top_logprobs: list[list[tuple[int, float]] | None]


def next_token(ids: list[int]) -> int:
    """A deterministic function of the whole sequence, never EOS."""
    h = 7
    for t in ids:
        h = (h * 31 + t) % 1_000_003
    return 1 + h % (VOCAB_SIZE - 1)


class HashSampler:
    """The token after a row is a hash of its sequence; `fail_on(rid)` makes one request's rows raise."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    def __call__(self, logits: np.ndarray, reqs: list[Req]) -> FakeSample:
        for r in reqs:
            if r.rid in self.failing:
                raise RuntimeError(f"injected sampling failure for {r.rid}")
        ids = [next_token(r.fill_ids) for r in reqs]
        lps: list[float | None] = [-1.0 if r.params.return_logprob else None for r in reqs]
        return FakeSample(ids, lps, [[] if r.params.return_logprob else None for r in reqs])


def make_scheduler(num_tokens: int, **config: Any) -> Scheduler:
    """A Scheduler over the fake runner; requests with `regex` set get a `DraftingMatcher`."""
    runner = SlotCheckingRunner(num_tokens + 1)
    cfg = EngineConfig(max_total_tokens=num_tokens, **config)
    sched = Scheduler(cfg, runner, HashSampler(), tokenizer=None, eos_token_ids={EOS_ID},
                      grammar_compiler=DraftingCompiler())
    runner.kv = sched.kv
    return sched


def expected_output(prompt: list[int], num_new: int) -> list[int]:
    ids = list(prompt)
    for _ in range(num_new):
        ids.append(next_token(ids))
    return ids[len(prompt):]


class DraftingMatcher:
    """A grammar stand-in that allows every token and proposes jump-forward drafts: the next
    `HashSampler` tokens, with every third draft wrong at one position (so verification must
    reject its tail). Tracks the sequence it was advanced over."""

    def __init__(self, prompt: list[int]) -> None:
        self.ids = list(prompt)
        self.num_proposed = 0

    def advance(self, tid: int) -> None:
        self.ids.append(tid)

    def is_terminated(self) -> bool:
        return False

    def propose_draft(self, tokenizer: Any, room: int) -> list[int]:
        self.num_proposed += 1
        n = min(room, 1 + len(self.ids) % 4)
        draft = expected_output(self.ids, n)
        if draft and self.num_proposed % 3 == 0:
            k = len(self.ids) % len(draft)
            draft[k] = 1 + draft[k] % (VOCAB_SIZE - 1)  # a different, non-EOS token
        return draft


class DraftingCompiler:
    """`regex` is the prompt as comma-separated ids; the compiled grammar drafts along it."""

    def compile(self, kind: str, spec: str, number_digits: int | None = None) -> Any:
        from concurrent.futures import Future

        compiled = type("Compiled", (), {"matcher": staticmethod(lambda: DraftingMatcher(
            [int(t) for t in spec.split(",")]))})()
        fut: Future = Future()
        fut.set_result(compiled)
        return fut
