"""The one request validator, shared by the offline Engine (via `Scheduler.add_request`) and the
server (`TokenizerManager.validate`, before anything is sent to the scheduler).

Every failure is an `InvalidRequest` (a ValueError) that carries the name of the offending
parameter as `SamplingParams` spells it (`param`), so an API can map it to its own name without
parsing the message.

Validation also normalizes values whose float arithmetic would break sampling, the way vLLM and
SGLang do: a temperature below `TEMPERATURE_EPS` means greedy (logits / 1e-39 overflow to
inf - inf = NaN), `top_p` is raised to `TOP_P_MIN` (a top_p that underflows to 0 in float32 would
drop every token; any top_p this small keeps only the most likely one), and `repetition_penalty`
to `REPETITION_PENALTY_MIN` (one that underflows to 0 divides logits by zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from arborlm.runtime.types import SamplingParams

TEMPERATURE_EPS = 1e-5
TOP_P_MIN = 1e-6
REPETITION_PENALTY_MIN = 1e-6
MAX_STOP_STRINGS = 16
MAX_TOP_LOGPROBS = 20

_INT_PARAMS = ("max_new_tokens", "min_new_tokens", "top_k", "top_logprobs_num", "logprob_start_len")
_FLOAT_PARAMS = ("temperature", "top_p", "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty")
_GRAMMAR_PARAMS = ("regex", "json_schema", "choices", "ebnf")


class InvalidRequest(ValueError):
    """A client error; `param` names the offending field (None: the request as a whole)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class RequestLimits:
    vocab_size: int
    max_context_len: int
    max_kv_tokens: int  # one request's prompt + output must fit the KV pool on its own


def _bad(params: SamplingParams, name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"sampling parameter {name}={getattr(params, name)!r} is invalid: {why}", param=name)


def _check_types(p: SamplingParams) -> None:
    for name in _INT_PARAMS:
        v = getattr(p, name)
        if isinstance(v, bool) or not isinstance(v, int):
            raise _bad(p, name, "must be an integer")
    for name in _FLOAT_PARAMS:
        v = getattr(p, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _bad(p, name, "must be a finite number")
    if p.seed is not None and (isinstance(p.seed, bool) or not isinstance(p.seed, int)):
        raise _bad(p, "seed", "must be an integer")


def _check_ranges(p: SamplingParams, vocab_size: int | None) -> None:
    checks: list[tuple[str, bool, str]] = [
        ("max_new_tokens", p.max_new_tokens >= 0, "must be >= 0"),
        ("min_new_tokens", p.min_new_tokens >= 0, "must be >= 0"),
        ("min_new_tokens", p.min_new_tokens <= p.max_new_tokens, f"must be <= max_new_tokens ({p.max_new_tokens})"),
        ("temperature", p.temperature >= 0, "must be >= 0"),
        ("top_p", 0.0 < p.top_p <= 1.0, "must be in (0, 1]"),
        ("top_k", p.top_k == -1 or p.top_k >= 1, "must be -1 (off) or >= 1"),
        ("min_p", 0.0 <= p.min_p <= 1.0, "must be in [0, 1]"),
        ("frequency_penalty", -2.0 <= p.frequency_penalty <= 2.0, "must be in [-2, 2]"),
        ("presence_penalty", -2.0 <= p.presence_penalty <= 2.0, "must be in [-2, 2]"),
        ("repetition_penalty", 0.0 < p.repetition_penalty <= 2.0, "must be in (0, 2]"),
        ("top_logprobs_num", 0 <= p.top_logprobs_num <= MAX_TOP_LOGPROBS, f"must be in [0, {MAX_TOP_LOGPROBS}]"),
        ("logprob_start_len", p.logprob_start_len >= -1, "must be -1 or >= 0"),
    ]
    for name, ok, why in checks:
        if not ok:
            raise _bad(p, name, why)
    if not all(isinstance(s, str) and s for s in p.stop):
        raise _bad(p, "stop", "must be a list of non-empty strings")
    if len(p.stop) > MAX_STOP_STRINGS:
        raise _bad(p, "stop", f"at most {MAX_STOP_STRINGS} stop strings")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in p.stop_token_ids):
        raise _bad(p, "stop_token_ids", "must be a list of integers")
    if vocab_size is not None and any(not 0 <= t < vocab_size for t in p.stop_token_ids):
        raise _bad(p, "stop_token_ids", f"token ids must be in [0, {vocab_size})")


def _check_grammar(p: SamplingParams) -> None:
    given = [n for n in _GRAMMAR_PARAMS if getattr(p, n) is not None]
    if len(given) > 1:
        raise InvalidRequest(f"sampling parameters {given} are mutually exclusive: give at most one", param=given[1])
    if p.regex is not None and not isinstance(p.regex, str):
        raise _bad(p, "regex", "must be a string")
    if p.choices is not None and (not isinstance(p.choices, list) or not p.choices
                                  or not all(isinstance(c, str) and c for c in p.choices)):
        raise _bad(p, "choices", "must be a non-empty list of non-empty strings")
    if p.ebnf is not None and (not isinstance(p.ebnf, str) or not p.ebnf.strip()):
        raise _bad(p, "ebnf", "must be a non-empty grammar text (Lark or GBNF)")
    if p.json_number_digits is not None and (
        isinstance(p.json_number_digits, bool) or not isinstance(p.json_number_digits, int)
        or not 0 <= p.json_number_digits <= 400
    ):
        raise _bad(p, "json_number_digits", "must be an integer in [0, 400] (0: unbounded)")


def _normalize(p: SamplingParams) -> None:
    if p.temperature < TEMPERATURE_EPS:
        p.temperature = 0.0
    p.top_p = max(p.top_p, TOP_P_MIN)
    p.repetition_penalty = max(p.repetition_penalty, REPETITION_PENALTY_MIN)


def validate_params(params: SamplingParams, vocab_size: int | None = None) -> None:
    """Check the sampling parameters on their own, then normalize them in place (module docstring)."""
    _check_types(params)
    _check_ranges(params, vocab_size)
    _check_grammar(params)
    _normalize(params)


def validate_request(input_ids: list[Any], params: SamplingParams, limits: RequestLimits) -> None:
    """Check a whole request against the engine's limits; raises InvalidRequest."""
    validate_params(params, limits.vocab_size)
    n = len(input_ids)
    if n == 0:
        raise InvalidRequest("the prompt is empty: give at least one token", param="input_ids")
    if any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < limits.vocab_size for t in input_ids):
        raise InvalidRequest(f"input_ids must be token ids in [0, {limits.vocab_size})", param="input_ids")
    total = n + params.max_new_tokens
    if total > limits.max_context_len:
        raise InvalidRequest(
            f"this model's maximum context length is {limits.max_context_len} tokens; the request needs "
            f"{total} ({n} in the prompt + {params.max_new_tokens} to generate): shorten the prompt or lower "
            "max_new_tokens", param="max_new_tokens")
    if total > limits.max_kv_tokens:
        raise InvalidRequest(
            f"the request needs {total} tokens of KV cache ({n} prompt + {params.max_new_tokens} to generate) "
            f"but the pool holds {limits.max_kv_tokens}: lower max_new_tokens or raise max_total_tokens",
            param="max_new_tokens")
    if params.logprob_start_len >= n:
        raise InvalidRequest(f"logprob_start_len={params.logprob_start_len} must be < the prompt's {n} tokens",
                             param="logprob_start_len")
