"""The user-facing builders: `gen`, `select`, roles, `program`, the default backend.

They only build IR nodes (ir.py); nothing here talks to a backend.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from arborlm.ir import SELECT_METHODS, Expr, ExprLike, Gen, Role, Select, as_expr

# gen() argument -> engine SamplingParams name (the rest keep their name).
GEN_PARAM_NAMES = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}

# dtype= -> (regex that constrains the output, converter of the generated text).
DTYPE_REGEX: dict[type, str] = {
    int: r"-?(0|[1-9][0-9]{0,17})",
    float: r"-?(0|[1-9][0-9]{0,15})(\.[0-9]{1,8})?",
    bool: r"(True|False)",
    str: r'"([^"\\\x00-\x1f]|\\["\\/bfnrt])*"',
}
DTYPE_CONVERT: dict[type, Callable[[str], Any]] = {
    int: int,
    float: float,
    bool: lambda t: t == "True",
    str: json.loads,
}

_default_backend: list[Any] = [None]


def set_default_backend(backend: Any) -> None:
    _default_backend[0] = backend


def get_default_backend() -> Any:
    return _default_backend[0]


def _schema_of(json_schema: Any) -> tuple[Any, Any]:
    """(schema for the engine, the Pydantic model class or None)."""
    if isinstance(json_schema, type) and hasattr(json_schema, "model_json_schema"):
        return json_schema.model_json_schema(), json_schema
    if isinstance(json_schema, str):
        try:
            return json.loads(json_schema), None
        except json.JSONDecodeError as e:
            raise ValueError(f"json_schema is not valid JSON: {e}") from None
    if isinstance(json_schema, (dict, bool)):
        return json_schema, None
    raise TypeError("json_schema must be a dict, a JSON string or a Pydantic model class, "
                    f"not {type(json_schema).__name__}")


def gen(name: str | None = None, max_tokens: int | None = None, min_tokens: int | None = None,
        stop: str | list[str] | None = None, stop_token_ids: list[int] | None = None,
        temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
        min_p: float | None = None, frequency_penalty: float | None = None,
        presence_penalty: float | None = None, ignore_eos: bool | None = None, seed: int | None = None,
        regex: str | None = None, json_schema: Any = None, choices: list[str] | None = None,
        dtype: type | None = None, return_logprob: bool | None = None) -> Expr:
    """Generate text (captured as `name`). `choices=` makes it a `select`; `dtype` constrains and
    converts; `json_schema` takes a dict, a JSON string or a Pydantic model class."""
    if choices is not None:
        return select(name, choices)
    given = {"max_tokens": max_tokens, "min_tokens": min_tokens, "stop": stop, "stop_token_ids": stop_token_ids,
             "temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
             "frequency_penalty": frequency_penalty, "presence_penalty": presence_penalty,
             "ignore_eos": ignore_eos, "seed": seed, "regex": regex, "return_logprob": return_logprob}
    params = {GEN_PARAM_NAMES.get(k, k): v for k, v in given.items() if v is not None}
    if isinstance(params.get("stop"), str):
        params["stop"] = [params["stop"]]
    model = None
    if json_schema is not None:
        params["json_schema"], model = _schema_of(json_schema)
    if dtype is not None:
        if dtype not in DTYPE_REGEX:
            raise TypeError(f"gen {name!r}: dtype must be one of int, float, bool, str, not {dtype!r}")
        if regex is not None or json_schema is not None:
            raise ValueError(f"gen {name!r}: give at most one of dtype, regex, json_schema")
        params["regex"] = DTYPE_REGEX[dtype]
    if regex is not None and json_schema is not None:
        raise ValueError(f"gen {name!r}: give at most one of regex and json_schema")
    return Gen(name, tuple(params.items()), dtype, model)


def select(name: str | None, choices: list[str], method: str = "token_length_normalized") -> Expr:
    """Pick one of `choices` by the prompt logprobs of each continuation (see backends.base)."""
    if method not in SELECT_METHODS:
        raise ValueError(f"select {name!r}: unknown method {method!r}; choose one of {SELECT_METHODS}")
    if not isinstance(choices, (list, tuple)) or not choices or not all(isinstance(c, str) and c for c in choices):
        raise ValueError(f"select {name!r}: choices must be a non-empty list of non-empty strings")
    return Select(name, tuple(choices), method)


def _role(role: str, expr: ExprLike | None) -> Expr:
    return Role(role, None if expr is None else as_expr(expr))


def system(expr: ExprLike | None = None) -> Expr:
    return _role("system", expr)


def user(expr: ExprLike | None = None) -> Expr:
    return _role("user", expr)


def assistant(expr: ExprLike | None = None) -> Expr:
    return _role("assistant", expr)


def program(func: Callable[..., Any]) -> Any:
    """Decorator: `@al.program def f(s, ...)` makes a `Program` (run / run_batch / arun / trace)."""
    from arborlm.programs import Program

    return Program(func)
