"""Jump-forward decoding: when the FSM forces a unique continuation (e.g. `","house":"` after a
JSON value), propose its tokens as a draft that the model verifies in one extend step (runtime/
scheduler.py), instead of decoding them one forward each.

Forced text comes from the token index itself, not from a separate char-level automaton: a state
forces byte c when every allowed token starts with c (and the state is not accepting, so EOS is not
an alternative); we then step over the single-byte token for c. This needs no second regex
engine (whose dialect could differ from outlines-core's) and is cached per FSM state on the shared
CompiledGrammar, so each state pays once.

Why a draft and not a forced append: tokens produced one by one under the mask can differ from any
tokenization of the forced text chosen here (canonical BPE of the text alone, or re-encoded with the
last few generated tokens), and the model's later tokens depend on which one it saw. Measured on
SmolLM2 JSON cards, appending forced tokens changed most greedy outputs, re-tokenized or not. The
draft is the forced text's canonical encoding; the model keeps the prefix it would have produced
itself, so outputs are exactly those of decoding without jump-forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .compiler import CompiledGrammar
    from .matcher import GrammarMatcher

MAX_FORCED_BYTES = 512
MAX_ALLOWED_SCAN = 4096  # forced states allow few tokens; a big allowed set means "not forced"


def forced_bytes(compiled: CompiledGrammar, state: int) -> bytes:
    cache = compiled._forced
    hit = cache.get(state)
    if hit is not None:
        return hit
    index, vocab = compiled.index, compiled.vocab
    out = bytearray()
    st = state
    seen = {st}
    while len(out) < MAX_FORCED_BYTES and not index.is_final_state(st):
        allowed = index.get_allowed_tokens(st)
        if not allowed or len(allowed) > MAX_ALLOWED_SCAN:
            break
        first = {vocab.token_bytes[t][0] for t in allowed if vocab.token_bytes[t]}
        if len(first) != 1:
            break
        c = first.pop()
        tok = vocab.byte_token[c]
        nxt = None if tok is None else index.get_next_state(st, tok)
        if nxt is None or nxt in seen:
            break
        out.append(c)
        st = nxt
        seen.add(st)
    res = bytes(out)
    cache[state] = res
    return res


def utf8_prefix(b: bytes) -> bytes:
    """The longest prefix of b that is complete UTF-8."""
    for cut in range(len(b), max(-1, len(b) - 4), -1):
        try:
            b[:cut].decode("utf-8")
            return b[:cut]
        except UnicodeDecodeError:
            continue
    return b""


def propose_draft(m: GrammarMatcher, tokenizer: Any, max_tokens: int) -> list[int]:
    """Draft tokens for speculative jump-forward, at most `max_tokens`; the matcher is NOT changed.

    The model verifies the draft (one extend with logits at every draft position) and keeps the
    prefix that constrained decoding would have produced itself, so a draft never changes the
    output; it only saves passes when it guesses the model's tokens. Guess 1: the tokens the model
    chose the last time it crossed these forced states (`CompiledGrammar._chosen`, shared by every
    request of the grammar: the same schema's keys recur). Guess 2, for the rest of the forced
    text: its canonical encoding alone (which the model often splits differently)."""
    if m._ended or max_tokens <= 0:
        return []
    compiled, index = m.compiled, m.compiled.index
    st: int | None = m.state
    ids: list[int] = []
    while len(ids) < max_tokens and forced_bytes(compiled, st):
        t = compiled._chosen.get(st)
        nxt = None if t is None else index.get_next_state(st, t)
        if nxt is None:
            break
        ids.append(t)
        st = nxt
    fb = utf8_prefix(forced_bytes(compiled, st))
    if fb and len(ids) < max_tokens:
        for t in list(tokenizer.encode(fb.decode("utf-8"), add_special_tokens=False))[: max_tokens - len(ids)]:
            st = index.get_next_state(st, t)
            if st is None:
                break
            ids.append(t)
    return ids
