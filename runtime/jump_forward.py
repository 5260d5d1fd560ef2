"""Speculative jump-forward, the scheduler's side (drafts come from `constrain/jump_forward.py`).

When the grammar forces a continuation (e.g. `","house":"`), its tokens are appended as a draft;
the next forward runs [last sampled token, draft...] as one extend with logits at every position,
and each position is sampled exactly as plain decoding would (same mask, penalties, seed step).
The draft prefix that matches is kept, the first mismatch is replaced by the model's own token, a
full match earns the token after it. Output therefore equals decoding without jump-forward, and
each accepted draft token saves one forward pass.

    before verify:  output_ids = [... t | d1 .. dk]   kv_len = seq_len - 1 - k   (t, d* pending)
    forward:        K/V for t, d1..dk; logits after t, d1, .., dk  -> k + 1 rows
    after verify:   output_ids = [... t, d1 .. dj, x]  (j accepted, x sampled); kv_len = seq_len - 1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from arborlm.runtime.config import EngineConfig
from arborlm.runtime.kv_manager import KVManager
from arborlm.runtime.types import FinishReason, Req


class SpeculativeJumpForward:
    """Mixed into Scheduler, which provides the attributes and the two hooks below."""

    config: EngineConfig
    kv: KVManager
    sample_fn: Any
    tokenizer: Any
    max_context_len: int

    # the Scheduler's methods: append a sampled token (-> finish or None), and emit new tokens
    _accept: Callable[[Req, int, float | None, Any], FinishReason | None]
    _report: Callable[[Req, list[int], FinishReason | None], None]

    def _jump_forward_on(self, req: Req) -> bool:
        on = req.params.jump_forward
        return req.grammar is not None and (self.config.jump_forward if on is None else on)

    def _propose_draft(self, req: Req) -> None:
        if not self._jump_forward_on(req):
            return
        room = min(req.params.max_new_tokens - len(req.output_ids), self.max_context_len - req.seq_len)
        draft = req.grammar.propose_draft(self.tokenizer, room)
        if draft:
            req.output_ids.extend(draft)
            req.num_draft = len(draft)
            req.jump_forward_proposed += len(draft)

    def _drop_draft(self, req: Req) -> None:
        if req.num_draft:
            del req.output_ids[-req.num_draft:]
            req.num_draft = 0

    def _verify(self, req: Req, logits: Any, rows: list[int]) -> None:
        """rows: the k + 1 logits rows after t, after d1, ..., after dk."""
        draft = req.output_ids[-req.num_draft:]
        self._drop_draft(req)
        batched = None  # greedy without penalties: every position's token in one masked argmax
        if getattr(self.sample_fn, "can_verify_batched", None) and self.sample_fn.can_verify_batched(req):
            batched = self.sample_fn.verify_greedy(logits[rows], req, draft)
        new_ids: list[int] = []
        finish = None
        for j, row in enumerate(rows):
            if batched is not None:
                tid, lp, top = batched[j], None, None
            else:
                result = self.sample_fn(logits[row : row + 1], [req])
                tid = int(result.next_token_ids[0])
                lp = result.logprobs[0] if result.logprobs else None
                top = result.top_logprobs[0] if result.top_logprobs else None
            finish = self._accept(req, tid, lp, top)
            new_ids.append(tid)
            if j == len(draft) or tid != draft[j]:
                break
            req.jump_forward_tokens += 1
            if finish is not None:
                break
        self.kv.truncate(req, req.seq_len - 1)  # K/V past the accepted draft is stale
        self._report(req, new_ids, finish)
