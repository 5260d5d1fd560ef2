"""Jump-forward decoding: when the FSM forces a unique continuation (e.g. `","house":"` after a
JSON value), append it in one extend instead of decoding it token by token.

Forced text comes from the token index itself, not from a separate char-level automaton: a state
forces byte c when every allowed token starts with c (and the state is not accepting, so EOS is not
an alternative); we then step over the single-byte token for c. This needs no second regex
engine (whose dialect could differ from outlines-core's) and is cached per FSM state on the shared
CompiledGrammar, so each state pays once.

Re-tokenisation trade-off (greedy equality). Tokens produced one by one under the mask can differ
from what the model would emit had it seen the forced text as ordinary text, so we re-encode the
last few generated tokens (<= 4, starting at a UTF-8 character boundary) + the forced text and
replace them (the caller drops k tokens and appends new_ids). The final token of the re-encoding
is *kept* only when no vocabulary token extends its bytes (then the model could not have
merged it with what follows); otherwise it is left for the model to generate, because text after
the forced part (e.g. the first characters of a string value after `"`) would often merge with it
in the model's own tokenisation. This keeps outputs equal to plain constrained greedy decoding in
the common cases at the cost of jumping one token less; exact equality is not guaranteed (BPE merges
across the boundary can still differ), which is inherent to jump-forward.
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


def _try_apply(m: GrammarMatcher, k: int, new_ids: list[int]) -> bool:
    """Roll back k and advance over new_ids; on any disallowed token restore and return False."""
    old = m._tokens[len(m._tokens) - k:] if k else []
    m.rollback(k)
    done = 0
    for t in new_ids:
        if not m.try_advance(t):
            break
        done += 1
    if done == len(new_ids):
        return True
    m.rollback(done)
    for t in old:
        m.advance(t)
    return False


def _trim_last(m: GrammarMatcher, ids: list[int], end_state_terminal: bool) -> list[int]:
    if ids and not end_state_terminal and m.compiled.vocab.extendable[ids[-1]]:
        return ids[:-1]
    return ids


def jump_forward(m: GrammarMatcher, output_ids: list[int], tokenizer: Any,
                 max_retokenize: int = 0) -> tuple[int, list[int]] | None:
    """(k, new_ids): drop the last k output tokens and append new_ids; the matcher is already
    rolled back and advanced accordingly. None when nothing is forced (matcher unchanged).

    max_retokenize > 0 re-encodes up to that many trailing model tokens together with the forced
    text (canonical BPE at the boundary). Measured on SmolLM2 with JSON cards (greedy, fp32): with 4,
    most outputs diverged from decoding without jump-forward (the model's history changes under it);
    with 0 (the default: forced text encoded alone, model tokens never replaced), 5 of 6 matched."""
    if m._ended:
        return None
    fb = utf8_prefix(forced_bytes(m.compiled, m.state))
    if not fb:
        return None
    tb = m.compiled.vocab.token_bytes
    hist = m._tokens
    # Largest k whose tokens are ours, plain text, and start on a character boundary.
    k = 0
    for cand in range(min(max_retokenize, len(output_ids), len(hist)), 0, -1):
        tail = output_ids[-cand:]
        if tail != hist[-cand:] or any(tb[t] is None for t in tail):
            continue
        prefix = b"".join(tb[t] for t in tail)  # type: ignore[misc]
        if prefix[0] & 0xC0 == 0x80:
            continue
        try:
            (prefix + fb).decode("utf-8")
        except UnicodeDecodeError:
            continue
        k = cand
        break
    tail = output_ids[-k:] if k else []
    prefix = b"".join(tb[t] for t in tail)  # type: ignore[misc]
    end_terminal = _terminal_after(m, fb)
    attempts = []
    if k:
        ids = list(tokenizer.encode((prefix + fb).decode("utf-8"), add_special_tokens=False))
        common = 0
        while common < min(len(ids), k) and ids[common] == tail[common]:
            common += 1
        attempts.append((k - common, _trim_last(m, ids, end_terminal)[common:]))
    ids = list(tokenizer.encode(fb.decode("utf-8"), add_special_tokens=False))
    attempts.append((0, _trim_last(m, ids, end_terminal)))
    for kk, new_ids in attempts:
        if not new_ids:
            continue
        if _try_apply(m, kk, new_ids):
            return kk, new_ids
    return None


def _terminal_after(m: GrammarMatcher, fb: bytes) -> bool:
    """Does the forced text end where only EOS may follow? Then the last token is safe to keep."""
    index, vocab = m.compiled.index, m.compiled.vocab
    st: int | None = m.state
    for c in fb:
        tok = vocab.byte_token[c]
        st = None if tok is None or st is None else index.get_next_state(st, tok)
    if st is None:
        return False
    return index.is_final_state(st) and index.get_allowed_tokens(st) == [vocab.eos_token_id]


def propose_draft(m: GrammarMatcher, tokenizer: Any, max_tokens: int) -> list[int]:
    """Draft tokens for speculative jump-forward: the forced text encoded alone, cut to the longest
    prefix the grammar accepts and to `max_tokens`. The matcher is NOT changed: the model verifies
    the draft (one extend with logits at every draft position) and keeps the prefix that
    constrained decoding would have produced itself, so a draft never changes the output."""
    if m._ended or max_tokens <= 0:
        return []
    fb = utf8_prefix(forced_bytes(m.compiled, m.state))
    if not fb:
        return []
    ids = list(tokenizer.encode(fb.decode("utf-8"), add_special_tokens=False))[:max_tokens]
    index = m.compiled.index
    st: int | None = m.state
    for i, t in enumerate(ids):
        st = index.get_next_state(st, t)
        if st is None:
            return ids[:i]
    return ids
