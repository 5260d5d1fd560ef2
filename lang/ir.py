"""The program IR: frozen nodes that `s += ...` applies to a state (and the tracer records).

Expressions compose: `al.assistant(al.gen("a"))` is a `Role` holding a `Gen`; `"Q: " + al.gen("a")`
is a `Seq`. The interpreter (interpreter.py) is the only code that turns nodes into backend calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

SELECT_METHODS = ("token_length_normalized", "greedy_token", "unconditional_likelihood_normalized")
ROLES = ("system", "user", "assistant")


class Expr:
    """Base of every node: `a + b` builds a sequence."""

    def __add__(self, other: ExprLike) -> Seq:
        return Seq((*_items(self), *_items(as_expr(other))))

    def __radd__(self, other: ExprLike) -> Seq:
        return Seq((*_items(as_expr(other)), *_items(self)))


@dataclass(frozen=True)
class Text(Expr):
    text: str


@dataclass(frozen=True)
class Gen(Expr):
    name: str | None
    params: tuple[tuple[str, Any], ...] = ()  # engine SamplingParams names (max_new_tokens, ...)
    dtype: type | None = None
    schema_model: Any = None  # a Pydantic model class when json_schema was one

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)


@dataclass(frozen=True)
class Select(Expr):
    name: str | None
    choices: tuple[str, ...]
    method: str = "token_length_normalized"


@dataclass(frozen=True)
class Role(Expr):
    role: str
    body: Expr | None = None  # None: the context-manager form opens / closes the role itself


@dataclass(frozen=True)
class RoleBegin(Expr):
    role: str


@dataclass(frozen=True)
class RoleEnd(Expr):
    role: str


@dataclass(frozen=True)
class VarScopeBegin(Expr):
    name: str


@dataclass(frozen=True)
class VarScopeEnd(Expr):
    name: str


@dataclass(frozen=True)
class Fork(Expr):
    num_branches: int


@dataclass(frozen=True)
class Join(Expr):
    mode: str = "gather_variable"


class StopTrace(Exception):
    """Raised while tracing at the first node whose text is not known ahead of the run."""


PLACEHOLDER_MARK = "\x00"  # an Arg formats as MARK name MARK


@dataclass(frozen=True)
class Arg(Expr):
    """A program argument while tracing: formats as a marker; any other use ends the trace."""

    name: str

    def __str__(self) -> str:
        return f"{PLACEHOLDER_MARK}{self.name}{PLACEHOLDER_MARK}"

    def __format__(self, spec: str) -> str:
        return str(self)

    def __bool__(self) -> bool:
        raise StopTrace(f"argument {self.name!r} used as a value")

    def __iter__(self) -> Any:
        raise StopTrace(f"argument {self.name!r} used as a value")

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise StopTrace(f"argument {self.name!r} used as a value")


@dataclass(frozen=True)
class Seq(Expr):
    items: tuple[Expr, ...] = field(default_factory=tuple)


ExprLike = Union[Expr, str]


def as_expr(x: Any) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, str):
        return Text(x)
    raise TypeError(f"cannot add {type(x).__name__} to a program state: use a str or an arborlm expression "
                    f"(gen, select, system/user/assistant)")


def _items(e: Expr) -> tuple[Expr, ...]:
    return e.items if isinstance(e, Seq) else (e,)
