"""GrammarCompiler: (kind, spec) -> compiled grammar, cached and compiled on a thread pool. The
compiled grammar is immutable and shared; per-request state lives in a matcher (xgrammar /
outlines-core style).

Two engines (`grammar_backend`), behind the same interface and the same int32 bitmask rows:
  outlines    regex -> outlines-core token Index (eager; CompiledGrammar + GrammarMatcher)
  llguidance  regex, or Lark text -> llguidance LLMatcher (lazy; llguidance_backend.py)
Both enforce the same language: the same regex for regex / choice, and for json_schema the JSON
Schema normaliser's output, as one flat regex (outlines) or as Lark rules over the same leaf
regexes (llguidance: schema_lark.py, linear in the schema). Only `ebnf` grammars need llguidance."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from outlines_core import Index

from .number_digits import DEFAULT_JSON_NUMBER_DIGITS, check_number_digits
from .regex_check import RegexNotSupported, check_user_regex
from .regex_gen import UnsupportedSchema
from .schema import schema_to_regex
from .schema_lark import schema_to_lark
from .vocab import TokenVocab, get_token_vocab

KINDS = ("regex", "json_schema", "choice", "ebnf")


class GrammarError(ValueError):
    """A grammar that cannot be compiled (invalid, or using something we cannot enforce)."""


@dataclass
class CompiledGrammar:
    kind: str
    spec_key: str
    regex: str
    index: Index
    vocab: TokenVocab
    compile_ms: float
    backend: str = "outlines"
    # Per-FSM-state facts shared by all matchers of this grammar (filled lazily, GIL-safe dicts).
    _forced: dict[int, bytes] = field(default_factory=dict, repr=False)
    _terminal: dict[int, bool] = field(default_factory=dict, repr=False)
    # Bitmask row per FSM state, filled on first use (see GrammarMatcher.fill_bitmask).
    _masks: dict[int, Any] = field(default_factory=dict, repr=False)
    # Token the model last chose in each forced FSM state (jump-forward drafts replay it).
    _chosen: dict[int, int] = field(default_factory=dict, repr=False)
    # text -> its canonical token ids (the tokenizer's encode), for forced text (matcher.py)
    encode: Any = field(default=None, repr=False)
    # The canonical token each forced FSM state's mask allows (None: no restriction), see matcher.py.
    _canonical: dict[int, int | None] = field(default_factory=dict, repr=False)

    @property
    def eos_token_id(self) -> int:
        return self.vocab.eos_token_id

    def matcher(self, **kw: Any):
        from .matcher import GrammarMatcher

        return GrammarMatcher(self, **kw)


def choice_regex(choices: list[str]) -> str:
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise GrammarError("choice grammar needs a non-empty list of non-empty strings")
    # Longest first is irrelevant for an FSM, but keeps the regex readable and deterministic.
    return "(" + "|".join(re.escape(c) for c in dict.fromkeys(choices)) + ")"


def _schema_obj(spec: Any) -> Any:
    if isinstance(spec, type) and hasattr(spec, "model_json_schema"):  # pydantic BaseModel class
        return spec.model_json_schema()
    if isinstance(spec, (str, bytes)):
        try:
            return json.loads(spec)
        except json.JSONDecodeError as e:
            raise GrammarError(f"json_schema is not valid JSON: {e}") from None
    if isinstance(spec, (dict, bool)):
        return spec
    raise GrammarError(f"json_schema must be a dict, a JSON string or a pydantic model class, got {type(spec).__name__}")


def canonical_key(kind: str, spec: Any, number_digits: int = DEFAULT_JSON_NUMBER_DIGITS) -> str:
    if kind not in KINDS:
        raise GrammarError(f"unknown grammar kind {kind!r}; expected one of {KINDS}")
    prefix = kind
    if kind == "json_schema":
        spec = _schema_obj(spec)
        prefix += f"/digits={number_digits}"
    try:
        return prefix + ":" + json.dumps(spec, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise GrammarError(f"{kind} spec is not JSON-serialisable: {e}") from None


def _build_outlines(compiler: GrammarCompiler, kind: str, key: str, syntax: str, source: str,
                    t0: float) -> CompiledGrammar:
    if syntax != "regex":
        raise GrammarError("ebnf grammars need grammar_backend='llguidance' (the outlines engine compiles "
                           "regular languages only)")
    try:
        index = Index(source, compiler.vocab.vocabulary)
    except Exception as e:  # noqa: BLE001 - outlines-core raises ValueError/RuntimeError variants
        raise GrammarError(f"cannot build the token index for {kind}: {e}") from None
    tokenizer = compiler.tokenizer
    return CompiledGrammar(kind=kind, spec_key=key, regex=source, index=index, vocab=compiler.vocab,
                           compile_ms=(time.perf_counter() - t0) * 1000.0,
                           encode=lambda text: tokenizer.encode(text, add_special_tokens=False))


def _build_llguidance(compiler: GrammarCompiler, kind: str, key: str, syntax: str, source: str,
                      t0: float) -> Any:
    from .llguidance_backend import build_llguidance, get_ll_tokenizer

    try:
        ll_tok = get_ll_tokenizer(compiler.tokenizer, compiler.vocab.eos_token_id)
        return build_llguidance(kind, key, syntax, source, ll_tok, compiler.vocab, t0)
    except ValueError as e:
        raise GrammarError(str(e)) from None


# grammar_backend name -> builder(compiler, kind, key, syntax, source text, t0) -> compiled grammar
BACKENDS = {"outlines": _build_outlines, "llguidance": _build_llguidance}


class GrammarCompiler:
    """One per tokenizer. `compile` returns a Future; results and failures are LRU-cached."""

    def __init__(self, tokenizer: Any, *, num_threads: int = 2, cache_size: int = 256,
                 whitespace_pattern: str | None = None, backend: str = "outlines",
                 number_digits: int = DEFAULT_JSON_NUMBER_DIGITS) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"grammar_backend={backend!r} is not one of {sorted(BACKENDS)}")
        self.backend = backend
        self.number_digits = check_number_digits(number_digits)
        self.tokenizer = tokenizer
        self.vocab = get_token_vocab(tokenizer)
        self.whitespace_pattern = whitespace_pattern
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Future[CompiledGrammar]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="grammar")

    def to_regex(self, kind: str, spec: Any, number_digits: int | None = None) -> str:
        """The regex of a regex / choice / json_schema grammar (the text itself for ebnf)."""
        if kind == "ebnf":
            if not isinstance(spec, str) or not spec.strip():
                raise GrammarError("ebnf grammar needs a non-empty string")
            return spec
        if kind == "regex":
            if not isinstance(spec, str):
                raise GrammarError("regex grammar needs a string")
            try:
                re.compile(spec)
            except re.error as e:
                raise GrammarError(f"invalid regex {spec!r}: {e}") from None
            try:
                check_user_regex(spec)
            except RegexNotSupported as e:
                raise GrammarError(str(e)) from None
            return spec
        if kind == "choice":
            return choice_regex(spec)
        return self._from_schema(schema_to_regex, spec, number_digits, self.whitespace_pattern)

    def _from_schema(self, convert: Any, spec: Any, number_digits: int | None, *args: Any) -> str:
        """convert(schema, *args, digits) with the normaliser's errors as GrammarError."""
        try:
            digits = self.number_digits if number_digits is None else number_digits
            return convert(_schema_obj(spec), *args, digits)
        except UnsupportedSchema as e:
            raise GrammarError(str(e)) from None
        except RecursionError:
            raise GrammarError("JSON schema nested too deeply") from None
        except ValueError as e:  # outlines-core's own rejections
            raise GrammarError(f"JSON schema not supported: {e}") from None

    def grammar_source(self, kind: str, spec: Any, number_digits: int | None = None) -> tuple[str, str]:
        """(syntax, text) this compiler's engine compiles: ("regex", the regex) for regex / choice
        and for json_schema on outlines; ("lark", the schema as rules: schema_lark.py) for
        json_schema on llguidance (compact JSON); ("ebnf", the text) for ebnf."""
        if kind == "json_schema" and self.backend == "llguidance" and self.whitespace_pattern is None:
            return "lark", self._from_schema(schema_to_lark, spec, number_digits)
        return ("ebnf" if kind == "ebnf" else "regex"), self.to_regex(kind, spec, number_digits)

    def _build(self, kind: str, spec: Any, key: str, number_digits: int | None) -> Any:
        t0 = time.perf_counter()
        syntax, source = self.grammar_source(kind, spec, number_digits)
        return BACKENDS[self.backend](self, kind, key, syntax, source, t0)

    def compile(self, kind: str, spec: Any, number_digits: int | None = None) -> Future[Any]:
        """A Future of the compiled grammar (CompiledGrammar for outlines, LLGuidanceGrammar for
        llguidance). `number_digits`: the digit bound of unbounded JSON numbers for this request
        (None: the compiler's default; 0: no bound)."""
        try:
            if number_digits is not None:
                check_number_digits(number_digits)
            digits = self.number_digits if number_digits is None else number_digits
            key = canonical_key(kind, spec, digits)
        except (GrammarError, ValueError) as e:
            fut: Future[CompiledGrammar] = Future()
            fut.set_exception(e if isinstance(e, GrammarError) else GrammarError(str(e)))
            return fut
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            fut = self._pool.submit(self._build, kind, spec, key, number_digits)
            self._cache[key] = fut  # failures stay cached too: repeats fail fast
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return fut

    def compile_sync(self, kind: str, spec: Any, number_digits: int | None = None) -> Any:
        return self.compile(kind, spec, number_digits).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
