"""GrammarMatcher: one per request. Holds only a stack of FSM states over the shared
CompiledGrammar, plus an outlines-core `Guide` kept in sync lazily, whose native
`write_mask_into` fills a bitmask row in about a microsecond.

Forced text is offered in its canonical tokens only. Where the grammar forces a unique continuation
(`","house":"` after a JSON value) whose canonical encoding has two or more tokens, the mask allows
just the first of them (the last one stays free: it may merge with the text that follows). Without
this the model could spell keys in fragments (`","`, `ho`, `use`, ...), which it never saw in
training and which sent a small model into degenerate strings (issue 12: one character card of 50
ran into the token limit on this engine, none with canonical keys); llguidance does the same. This
narrows only the *mask*: `advance` / `is_allowed` still accept every tokenization of the language
(replays, label checks)."""

from __future__ import annotations

from typing import Any

from outlines_core import Guide

from .compiler import CompiledGrammar
from .jump_forward import forced_bytes, utf8_prefix

_GUIDE_ROLLBACK = 64  # beyond this the Guide is rebuilt by replay
# Bitmask rows cached per FSM state and grammar (6 KB each for a 49k vocab). A mask depends on the
# state alone, and decoding revisits few states (inside a JSON string every character leads back
# to the same one), while outlines-core's write_mask_into walks every allowed token (~170 us for a
# free-text state): the cache turns most fills into a 6 KB copy.
MASK_CACHE_STATES = 512


class GrammarMatcher:
    def __init__(self, compiled: CompiledGrammar) -> None:
        self.compiled = compiled
        self.index = compiled.index
        self.eos = compiled.vocab.eos_token_id
        self._states: list[int] = [self.index.get_initial_state()]
        self._tokens: list[int] = []
        self._ended = False  # EOS consumed
        self._guide: Guide | None = None
        self._guide_len = 0  # how many tokens the guide has consumed
        self._common = 0  # length of the history the guide and this matcher still share

    # -- state ----------------------------------------------------------------------------------
    @property
    def state(self) -> int:
        return self._states[-1]

    @property
    def num_tokens(self) -> int:
        return len(self._tokens)

    def is_accepting(self) -> bool:
        return self.index.is_final_state(self.state)

    def is_terminated(self) -> bool:
        """True when nothing but EOS can follow (or EOS was consumed)."""
        if self._ended:
            return True
        st = self.state
        cache = self.compiled._terminal
        hit = cache.get(st)
        if hit is None:
            hit = self.index.is_final_state(st) and self.index.get_allowed_tokens(st) == [self.eos]
            cache[st] = hit
        return hit

    def allowed_tokens(self) -> list[int]:
        """The tokens the mask allows (see the module docstring on forced text)."""
        if self._ended:
            return []
        canonical = self.canonical_token()
        return [canonical] if canonical is not None else list(self.index.get_allowed_tokens(self.state))

    def canonical_token(self) -> int | None:
        """The one token the mask allows in a forced-text state (None: no such restriction)."""
        cache = self.compiled._canonical
        st = self.state
        if st in cache:
            return cache[st]
        token = None
        text = self.forced_text()
        if text and self.compiled.encode is not None:
            ids = self.compiled.encode(text)
            if len(ids) >= 2 and self.index.get_next_state(st, ids[0]) is not None:
                token = ids[0]
        cache[st] = token
        return token

    def is_allowed(self, token_id: int) -> bool:
        if self._ended:
            return False
        if token_id == self.eos:
            return self.is_accepting()
        return self.index.get_next_state(self.state, token_id) is not None

    # -- transitions ----------------------------------------------------------------------------
    def advance(self, token_id: int) -> None:
        if self._ended:
            raise ValueError(f"token {token_id} after EOS: the grammar has already finished")
        if token_id == self.eos:
            if not self.is_accepting():
                raise ValueError("EOS is not allowed: the output does not match the grammar yet")
            self._ended = True
            nxt = self.state
        else:
            nxt = self.index.get_next_state(self.state, token_id)
            if nxt is None:
                raise ValueError(f"token {token_id} is not allowed by the grammar in state {self.state}")
            if forced_bytes(self.compiled, self.state):  # remember the model's token (jump-forward drafts)
                self.compiled._chosen[self.state] = token_id
        self._states.append(nxt)
        self._tokens.append(token_id)

    def try_advance(self, token_id: int) -> bool:
        if not self.is_allowed(token_id):
            return False
        self.advance(token_id)
        return True

    def rollback(self, k: int) -> None:
        if k < 0 or k > len(self._tokens):
            raise ValueError(f"cannot roll back {k} tokens (have {len(self._tokens)})")
        if k == 0:
            return
        if self._ended:
            self._ended = False  # EOS, if consumed, is always the last token
        del self._states[-k:]
        del self._tokens[-k:]
        self._common = min(self._common, len(self._tokens))

    def copy(self) -> GrammarMatcher:
        m = GrammarMatcher.__new__(GrammarMatcher)
        m.compiled, m.index, m.eos = self.compiled, self.index, self.eos
        m._states, m._tokens, m._ended = list(self._states), list(self._tokens), self._ended
        m._guide, m._guide_len, m._common = None, 0, 0  # rebuilt lazily by replay on the first fill_bitmask
        return m

    # -- bitmask --------------------------------------------------------------------------------
    def _sync_guide(self) -> Guide:
        toks = self._tokens  # never ends with EOS here: fill_bitmask handles the ended case
        g = self._guide
        if g is not None and self._guide_len > self._common:
            back = self._guide_len - self._common
            if back <= g.get_allowed_rollback():
                g.rollback_state(back)
                self._guide_len = self._common
            else:
                g = None
        if g is None:
            g = Guide(self.index, _GUIDE_ROLLBACK)
            self._guide_len = 0
        for t in toks[self._guide_len:]:
            g.advance(t, return_tokens=False)
        self._guide = g
        self._guide_len = self._common = len(toks)
        return g

    def fill_bitmask(self, row: Any) -> None:
        """Write the allowed-token bitmask into `row`: a contiguous CPU int32 tensor (or numpy
        array) of ceil(vocab/32) words; bit j of word w <=> token 32*w + j allowed."""
        if self._ended:
            row.zero_() if hasattr(row, "zero_") else row.fill(0)
            return
        masks = self.compiled._masks
        hit = masks.get(self.state)
        if hit is not None and hasattr(row, "copy_") and hit.shape == row.shape:
            row.copy_(hit)
            return
        canonical = self.canonical_token()
        if canonical is not None:
            row[:] = 0
            word, bit = divmod(canonical, 32)
            row[word] = (1 << bit) - (1 << 32 if bit == 31 else 0)  # int32 two's complement
            return
        g = self._sync_guide()
        if hasattr(row, "data_ptr"):
            ptr, numel, esize = row.data_ptr(), row.numel(), row.element_size()
            if not row.is_contiguous() or row.device.type != "cpu":
                raise ValueError("bitmask row must be a contiguous CPU tensor")
        else:  # numpy
            ptr, numel, esize = row.ctypes.data, row.size, row.itemsize
        if esize != 4:
            raise ValueError("bitmask row must be int32")
        g.write_mask_into(ptr, numel, esize)
        if hasattr(row, "clone") and len(masks) < MASK_CACHE_STATES:
            masks[self.state] = row.clone()

    # -- jump-forward ---------------------------------------------------------------------------
    def forced_text(self) -> str:
        if self._ended:
            return ""
        return utf8_prefix(forced_bytes(self.compiled, self.state)).decode("utf-8")

    def propose_draft(self, tokenizer: Any, max_tokens: int) -> list[int]:
        """Forced-text tokens to verify speculatively (the matcher is unchanged)."""
        from .jump_forward import propose_draft

        return propose_draft(self, tokenizer, max_tokens)
