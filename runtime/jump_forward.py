"""Speculative jump-forward, the scheduler's collaborator (drafts come from `constrain/jump_forward.py`).

When the grammar forces a continuation (e.g. `","house":"`), its tokens become the request's
`draft_ids`; the next forward runs [last sampled token, draft...] as one extend with logits at
every position, and each position is sampled exactly as plain decoding would (same mask,
penalties, seed step). The draft prefix that matches is kept, the first mismatch is replaced by
the model's own token, a full match earns the token after it. Output therefore equals decoding
without jump-forward, and each accepted draft token saves one forward pass.

    before verify:  output_ids = [... t], draft_ids = [d1 .. dk]   kv_len = seq_len - 1 - k
    forward:        K/V for t, d1..dk; logits after t, d1, .., dk  -> k + 1 rows
    after verify:   output_ids = [... t, d1 .. dj, x]  (j accepted, x sampled); kv_len = seq_len - 1

The scheduler owns accepting a token (output, matcher, stop checks); `JumpForward.verify_tokens`
hands it the model's token position by position, each sampled after the previous one was accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from arborlm.runtime.types import Req


class JumpForward:
    def __init__(self, enabled_by_default: bool, sample_fn: Any, tokenizer: Any, max_context_len: int) -> None:
        self.enabled_by_default = enabled_by_default
        self.sample_fn = sample_fn
        self.tokenizer = tokenizer
        self.max_context_len = max_context_len

    def is_on(self, req: Req) -> bool:
        on = req.params.jump_forward
        return req.grammar is not None and (self.enabled_by_default if on is None else on)

    def propose(self, req: Req) -> None:
        """Give the request a draft if its grammar forces one (within max_new_tokens and the context)."""
        if not self.is_on(req):
            return
        room = min(req.params.max_new_tokens - len(req.output_ids), self.max_context_len - req.seq_len)
        draft = req.grammar.propose_draft(self.tokenizer, room)
        if draft:
            req.draft_ids = list(draft)
            req.jump_forward_proposed += len(draft)

    @staticmethod
    def take_draft(req: Req) -> list[int]:
        draft, req.draft_ids = req.draft_ids, []
        return draft

    def verify_tokens(self, req: Req, draft: list[int], logits: Any,
                      rows: list[int]) -> Iterator[tuple[int, float | None, Any]]:
        """(token, logprob, top logprobs) at the k + 1 logits `rows` (after t, after d1, ..., after dk).
        Lazy: the caller accepts each token before the next is sampled, and stops at a mismatch."""
        if getattr(self.sample_fn, "can_verify_batched", None) and self.sample_fn.can_verify_batched(req):
            # greedy without penalties or logprobs: every position's token in one masked argmax
            yield from ((tid, None, None) for tid in self.sample_fn.verify_greedy(logits[rows], req, draft))
            return
        for row in rows:
            result = self.sample_fn(logits[row : row + 1], [req])
            yield (int(result.next_token_ids[0]), result.logprobs[0] if result.logprobs else None,
                   result.top_logprobs[0] if result.top_logprobs else None)
