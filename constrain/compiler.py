"""GrammarCompiler: (kind, spec) -> CompiledGrammar (regex + outlines-core token Index), cached and
compiled on a thread pool. The compiled grammar is immutable and shared; per-request state lives in
`GrammarMatcher` (xgrammar / outlines-core style)."""

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

from .regex_gen import UnsupportedSchema
from .schema import schema_to_regex
from .vocab import TokenVocab, get_token_vocab

KINDS = ("regex", "json_schema", "choice")


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
    # Per-FSM-state facts shared by all matchers of this grammar (filled lazily, GIL-safe dicts).
    _forced: dict[int, bytes] = field(default_factory=dict, repr=False)
    _terminal: dict[int, bool] = field(default_factory=dict, repr=False)
    # Bitmask row per FSM state, filled on first use (see GrammarMatcher.fill_bitmask).
    _masks: dict[int, Any] = field(default_factory=dict, repr=False)
    # Token the model last chose in each forced FSM state (jump-forward drafts replay it).
    _chosen: dict[int, int] = field(default_factory=dict, repr=False)

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


def canonical_key(kind: str, spec: Any) -> str:
    if kind not in KINDS:
        raise GrammarError(f"unknown grammar kind {kind!r}; expected one of {KINDS}")
    if kind == "json_schema":
        spec = _schema_obj(spec)
    try:
        return kind + ":" + json.dumps(spec, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise GrammarError(f"{kind} spec is not JSON-serialisable: {e}") from None


class GrammarCompiler:
    """One per tokenizer. `compile` returns a Future; results and failures are LRU-cached."""

    def __init__(self, tokenizer: Any, *, num_threads: int = 2, cache_size: int = 256,
                 whitespace_pattern: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.vocab = get_token_vocab(tokenizer)
        self.whitespace_pattern = whitespace_pattern
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Future[CompiledGrammar]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="grammar")

    def to_regex(self, kind: str, spec: Any) -> str:
        if kind == "regex":
            if not isinstance(spec, str):
                raise GrammarError("regex grammar needs a string")
            try:
                re.compile(spec)
            except re.error as e:
                raise GrammarError(f"invalid regex {spec!r}: {e}") from None
            return spec
        if kind == "choice":
            return choice_regex(spec)
        try:
            return schema_to_regex(_schema_obj(spec), self.whitespace_pattern)
        except UnsupportedSchema as e:
            raise GrammarError(str(e)) from None
        except RecursionError:
            raise GrammarError("JSON schema nested too deeply") from None
        except ValueError as e:  # outlines-core's own rejections
            raise GrammarError(f"JSON schema not supported: {e}") from None

    def _build(self, kind: str, spec: Any, key: str) -> CompiledGrammar:
        t0 = time.perf_counter()
        regex = self.to_regex(kind, spec)
        try:
            index = Index(regex, self.vocab.vocabulary)
        except Exception as e:  # noqa: BLE001 - outlines-core raises ValueError/RuntimeError variants
            raise GrammarError(f"cannot build the token index for {kind}: {e}") from None
        return CompiledGrammar(kind=kind, spec_key=key, regex=regex, index=index, vocab=self.vocab,
                               compile_ms=(time.perf_counter() - t0) * 1000.0)

    def compile(self, kind: str, spec: Any) -> Future[CompiledGrammar]:
        try:
            key = canonical_key(kind, spec)
        except GrammarError as e:
            fut: Future[CompiledGrammar] = Future()
            fut.set_exception(e)
            return fut
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            fut = self._pool.submit(self._build, kind, spec, key)
            self._cache[key] = fut  # failures stay cached too: repeats fail fast
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return fut

    def compile_sync(self, kind: str, spec: Any) -> CompiledGrammar:
        return self.compile(kind, spec).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
