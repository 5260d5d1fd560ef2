"""The llguidance grammar engine: JSON schemas as Lark rules (schema_lark.py: our honest
normaliser's output, objects / arrays / unions as rules over the same leaf regexes as the flat
regex), user regexes and choices as regexes, and Lark / GBNF grammars (`ebnf`), compiled by
llguidance's lazy derivative-based lexer and Earley parser instead of an eager token index.

Why not llguidance's own JSON-Schema compiler: the normaliser already turns every schema we accept
into a language we enforce exactly (or narrow soundly, see schema.py) and rejects the rest with the
keyword and its JSON path; feeding llguidance that language as rules keeps coverage and exactness
equal to the outlines-core engine's (tests compare both on the JSON-Schema-Test-Suite), while the
compile takes milliseconds: the rules are linear in the schema (the flat regex of an object with
many optional properties is not), and no index over the vocabulary is built up front (masks are
computed per step, lazily cached inside llguidance). llguidance's `lenient` JSON option is never
used, and any grammar warning it reports is turned into a compile error.

A grammar is compiled once into a template `LLMatcher`; each request gets a `deep_copy` of it.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import llguidance
import llguidance.hf

from .jump_forward import utf8_prefix
from .vocab import TokenVocab

# llguidance's default lexer fuel refuses the regexes of the largest schemas (millions of
# characters): the initial build as "too big" (1M), and a mask step (200k) can run out and then
# refuse a token its own mask allowed. 20M each (~0.4 s initial, ~1.4 s per step at most, only ever
# reached by such giant regexes) keeps them, and coverage, equal to the outlines engine's.
INITIAL_LEXER_FUEL = 20_000_000
STEP_LEXER_FUEL = 20_000_000

_lock = threading.Lock()
_ll_tokenizers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def get_ll_tokenizer(tokenizer: Any, eos_token_id: int) -> Any:
    """The cached llguidance tokenizer of a Hugging Face fast tokenizer (building it takes ~0.5 s)."""
    with _lock:
        hit = _ll_tokenizers.get(tokenizer)
        if hit is None:
            try:
                hit = llguidance.hf.from_tokenizer(tokenizer, eos_token=eos_token_id)
            except ValueError as e:
                raise ValueError(f"grammar_backend='llguidance' needs a fast Hugging Face tokenizer: {e}") from None
            _ll_tokenizers[tokenizer] = hit
        return hit


def ll_grammar(syntax: str, source: str) -> str:
    """llguidance's grammar for a regex, our own Lark text (a JSON schema's rules) or a user's ebnf."""
    if syntax == "ebnf":
        return llguidance.grammar_from("grammar", source)  # Lark, or GBNF converted to Lark
    if syntax == "lark":
        return llguidance.grammar_from("lark", source)
    return llguidance.LLMatcher.grammar_from_regex(source)


@dataclass
class LLGuidanceGrammar:
    """A compiled grammar of the llguidance engine (immutable, shared by its matchers)."""

    kind: str
    spec_key: str
    syntax: str  # "regex" | "lark" (a JSON schema's rules) | "ebnf"
    source: str  # the grammar text given to llguidance in that syntax
    template: Any  # LLMatcher in its initial state: deep-copied per request
    vocab: TokenVocab
    num_words: int  # int32 words of llguidance's mask (its vocabulary, rounded up to 32)
    compile_ms: float
    backend: str = "llguidance"

    @property
    def eos_token_id(self) -> int:
        return self.vocab.eos_token_id

    @property
    def regex(self) -> str:
        """The regex compiled ("" for Lark and ebnf grammars)."""
        return self.source if self.syntax == "regex" else ""

    def matcher(self) -> LLGuidanceMatcher:
        return LLGuidanceMatcher(self, self.template.deep_copy())


def build_llguidance(kind: str, key: str, syntax: str, source: str, ll_tokenizer: Any, vocab: TokenVocab,
                     t0: float) -> LLGuidanceGrammar:
    """Compile; raise ValueError naming llguidance's error or warning (a warning may mean a
    construct was relaxed, so it is not enforced exactly: rejected)."""
    import time

    grammar = ll_grammar(syntax, source)
    limits = llguidance.LLParserLimits(initial_lexer_fuel=INITIAL_LEXER_FUEL, step_lexer_fuel=STEP_LEXER_FUEL)
    template = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0, limits=limits)
    if template.is_error():
        raise ValueError(f"llguidance error in the {kind} grammar: {template.get_error()[:300]}")
    warnings = template.get_grammar_warnings()
    if warnings:
        raise ValueError(f"llguidance warning (not enforced exactly) in the {kind} grammar: "
                         + "; ".join(w[:300] for w in warnings))
    return LLGuidanceGrammar(kind=kind, spec_key=key, syntax=syntax, source=source,
                             template=template, vocab=vocab, num_words=(ll_tokenizer.vocab_size + 31) // 32,
                             compile_ms=(time.perf_counter() - t0) * 1000.0)


class LLGuidanceMatcher:
    """Per-request state over an `LLMatcher`, with GrammarMatcher's interface. EOS is tracked here
    (never fed to llguidance), so rollback over it is plain bookkeeping."""

    def __init__(self, compiled: LLGuidanceGrammar, ll: Any) -> None:
        self.compiled = compiled
        self.ll = ll
        self.eos = compiled.vocab.eos_token_id
        self._num_words = compiled.num_words
        self._tokens: list[int] = []
        self._ended = False

    @property
    def num_tokens(self) -> int:
        return len(self._tokens)

    def is_accepting(self) -> bool:
        return self._ended or self.ll.is_accepting()

    def is_terminated(self) -> bool:
        return self._ended or self.ll.is_stopped()

    def is_allowed(self, token_id: int) -> bool:
        if self._ended:
            return False
        if token_id == self.eos:
            return self.ll.is_accepting()
        return self.ll.validate_tokens([token_id]) == 1

    def allowed_tokens(self) -> list[int]:
        import numpy as np

        if self._ended:
            return []
        row = np.zeros(self._num_words, dtype=np.int32)
        self.fill_bitmask(row)
        bits = np.unpackbits(row.view(np.uint8), bitorder="little")
        return [int(t) for t in np.nonzero(bits)[0]]

    def advance(self, token_id: int) -> None:
        if self._ended:
            raise ValueError(f"token {token_id} after EOS: the grammar has already finished")
        if token_id == self.eos:
            if not self.ll.is_accepting():
                raise ValueError("EOS is not allowed: the output does not match the grammar yet")
            self._ended = True
        elif not self.is_allowed(token_id) or not self.ll.consume_token(token_id):
            raise ValueError(f"token {token_id} is not allowed by the grammar here")
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
        n = k
        if self._ended:
            self._ended = False  # EOS, if consumed, is always the last token
            n -= 1
        if n and not self.ll.rollback(n):
            raise ValueError(f"llguidance could not roll back {n} tokens: {self.ll.get_error()}")
        del self._tokens[-k:]

    def copy(self) -> LLGuidanceMatcher:
        m = LLGuidanceMatcher(self.compiled, self.ll.deep_copy())
        m._tokens, m._ended = list(self._tokens), self._ended
        return m

    def fill_bitmask(self, row: Any) -> None:
        """Same contract as GrammarMatcher.fill_bitmask: int32 row, bit j of word w <=> token 32w+j.
        A row longer than the tokenizer's words (model vocab padding) gets zeros past them."""
        if hasattr(row, "data_ptr"):
            if not row.is_contiguous() or row.device.type != "cpu" or row.element_size() != 4:
                raise ValueError("bitmask row must be a contiguous CPU int32 tensor")
            ptr, numel = row.data_ptr(), row.numel()
        else:  # numpy
            if row.itemsize != 4:
                raise ValueError("bitmask row must be int32")
            ptr, numel = row.ctypes.data, row.size
        if numel < self._num_words:
            raise ValueError(f"bitmask row has {numel} words, the vocabulary needs {self._num_words}")
        if numel > self._num_words:
            row[self._num_words:] = 0
        if self._ended:
            row[: self._num_words] = 0
            return
        self.ll.unsafe_compute_mask_ptr(ptr, self._num_words * 4)

    # -- jump-forward ---------------------------------------------------------------------------
    def forced_text(self) -> str:
        if self._ended:
            return ""
        return utf8_prefix(self.ll.compute_ff_bytes()).decode("utf-8")

    def propose_draft(self, tokenizer: Any, max_tokens: int) -> list[int]:
        """llguidance's fast-forward tokens (the forced text, tokenized so the next token can still
        extend it), as a draft the model verifies; the matcher is unchanged."""
        if self._ended or max_tokens <= 0:
            return []
        ff = list(self.ll.compute_ff_tokens())[:max_tokens]
        return ff[: self.ll.validate_tokens(ff)] if ff else []
