"""Stop conditions checked after each appended token (design.md §3, 'check stops').

Order: EOS / stop_token_ids (after min_new_tokens) → stop strings → grammar terminated →
max_new_tokens / context limit. A stop string split across tokens is caught because we decode a
tail window of tokens wide enough to hold the longest stop string plus the new token's text.
"""

from __future__ import annotations

from typing import Any

from arborlm.runtime.types import FinishReason, Req


class StopChecker:
    def __init__(self, tokenizer: Any, eos_token_ids: set[int], max_context_len: int) -> None:
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_context_len = max_context_len

    def check(self, req: Req, num_new: int = 1) -> FinishReason | None:
        """Called after `num_new` tokens were appended to req.output_ids."""
        p = req.params
        out = req.output_ids
        num_out = len(out)
        for tid in out[num_out - num_new:]:
            if num_out < p.min_new_tokens:
                break
            if tid in p.stop_token_ids:
                return FinishReason("stop", matched=tid)
            if tid in self.eos_token_ids and not p.ignore_eos:
                return FinishReason("stop", matched=tid)
        if p.stop and num_out >= p.min_new_tokens:
            matched = self._match_stop_string(req, num_new)
            if matched is not None:
                return FinishReason("stop", matched=matched[0], stop_chars_from_end=matched[1])
        if req.grammar is not None and req.grammar.is_terminated():
            return FinishReason("stop", matched=None)
        if num_out >= p.max_new_tokens:
            return FinishReason("length")
        if req.seq_len >= self.max_context_len:
            return FinishReason("length", message="context length reached")
        return None

    def _match_stop_string(self, req: Req, num_new: int) -> tuple[str, int] | None:
        """(stop string, chars from the end of the output text where the match starts) or None."""
        p = req.params
        max_stop_chars = max(len(s) for s in p.stop)
        # Each token decodes to >= 1 char (or a piece of a multi-byte char), so this many tokens
        # before the new ones cover any stop string that ends inside the new tokens' text.
        window = req.output_ids[-(num_new + max_stop_chars + 1):]
        tail_old = self.tokenizer.decode(window[:-num_new], skip_special_tokens=p.skip_special_tokens)
        tail = self.tokenizer.decode(window, skip_special_tokens=p.skip_special_tokens)
        # Only a stop string that ends in the new text counts: earlier ones would have stopped us.
        boundary = len(tail_old) if tail.startswith(tail_old) else 0
        for s in p.stop:
            at = tail.find(s, max(0, boundary - len(s) + 1))
            if at >= 0:
                return s, len(tail) - at
        return None
