"""Incremental detokenization, UTF-8 safe across token boundaries, with stop-string hold-back.

Used by `Engine.stream` and by the server's detokenizer process, so both emit the same text.

Why offsets: decoding one token at a time breaks multi-byte characters (a byte-level BPE token may
hold half of an emoji) and drops the leading space some tokenizers attach to words. So we decode a
small window `ids[prefix_offset:]` and emit what it adds beyond `ids[prefix_offset:read_offset]`,
and wait while the tail is an incomplete character (U+FFFD).

Why hold-back: the returned text must end before a stop string, even one split across tokens, so
a streamed delta never shows a stop string's beginning that may later turn out to be the stop.
"""

from __future__ import annotations

from typing import Any

from arborlm.runtime.types import FinishReason


def decode_stop_trimmed(tokenizer: Any, ids: list[int], finish: FinishReason | None,
                        skip_special_tokens: bool = True) -> str:
    """Whole-text decode, cut before a matched stop string (the non-streaming path)."""
    text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    return trim_at_stop(text, finish)


def trim_at_stop(text: str, finish: FinishReason | None) -> str:
    """Cut before the stop string that stopped generation: the one `stop_chars_from_end` from the
    end (earlier occurrences were ignored under min_new_tokens), else the first occurrence."""
    if finish is None or finish.kind != "stop" or not isinstance(finish.matched, str):
        return text
    if finish.stop_chars_from_end is not None:
        cut = len(text) - finish.stop_chars_from_end
        if cut >= 0 and text.startswith(finish.matched, cut):
            return text[:cut]
    cut = text.find(finish.matched)
    return text[:cut] if cut >= 0 else text


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True, stop: list[str] | None = None,
                 prompt_tail_ids: list[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.stop = [s for s in (stop or []) if s]
        # A few prompt tokens as context make the first output token decode with its real spacing.
        self.ids: list[int] = list(prompt_tail_ids or [])[-4:]
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""  # all decoded output text so far
        self.emitted_len = 0  # chars of self.text already handed out

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, token_ids: list[int]) -> str:
        """Feed new token ids; return the text delta that is safe to show now."""
        for tid in token_ids:
            self.ids.append(tid)
            prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
            new_text = self._decode(self.ids[self.prefix_offset:])
            if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
                self.text += new_text[len(prefix_text):]
                self.prefix_offset = self.read_offset
                self.read_offset = len(self.ids)
        return self._take(hold_back=self._stop_prefix_len())

    def finish(self, finish: FinishReason | None) -> str:
        """Flush the rest (cut before a matched stop string); return the final delta."""
        tail = self._decode(self.ids[self.prefix_offset:])
        prefix_text = self._decode(self.ids[self.prefix_offset:self.read_offset])
        if len(tail) > len(prefix_text):
            self.text += tail[len(prefix_text):]
            self.prefix_offset = self.read_offset = len(self.ids)
        self.text = trim_at_stop(self.text, finish)
        return self._take(hold_back=0)

    def _stop_prefix_len(self) -> int:
        """Length of the longest suffix of the unemitted text that is a proper prefix of a stop
        string, or that contains a complete stop string (hold everything from its start)."""
        if not self.stop:
            return 0
        pending = self.text[self.emitted_len:]
        hold = 0
        for s in self.stop:
            at = pending.find(s)
            if at >= 0:
                hold = max(hold, len(pending) - at)
                continue
            for k in range(min(len(s) - 1, len(pending)), 0, -1):
                if pending.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return hold

    def _take(self, hold_back: int) -> str:
        end = len(self.text) - hold_back
        if end <= self.emitted_len:
            return ""
        delta = self.text[self.emitted_len:end]
        self.emitted_len = end
        return delta
