"""Applies one IR node to a state through its backend: the only code that calls a backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from arborlm.backends.base import BackendError
from arborlm.ir import (
    PLACEHOLDER_MARK,
    Arg,
    Expr,
    Fork,
    Gen,
    Join,
    Role,
    RoleBegin,
    RoleEnd,
    Select,
    Seq,
    StopTrace,
    Text,
    VarScopeBegin,
    VarScopeEnd,
)

if TYPE_CHECKING:
    from arborlm.state import ProgramState


class CallError(RuntimeError):
    """A backend rejected a call; the message names it: `gen 'answer': ...`."""


class Interpreter:
    def __init__(self) -> None:
        self._handlers: dict[type, Any] = {
            Seq: self._seq, Text: self._text, Role: self._role, RoleBegin: self._role_begin,
            RoleEnd: self._role_end, Gen: self._gen, Select: self._select,
            VarScopeBegin: self._scope_begin, VarScopeEnd: self._scope_end, Arg: self._arg,
        }

    def apply(self, state: ProgramState, node: Expr) -> None:
        handler = self._handlers.get(type(node))
        if handler is None:
            if isinstance(node, (Fork, Join)):
                raise TypeError("use s.fork(n) and forks.join() rather than adding Fork / Join nodes")
            raise TypeError(f"cannot apply {type(node).__name__}")
        if not isinstance(node, (Seq, Role)):
            state.nodes.append(node)
        handler(state, node)

    # ------------------------------------------------------------------ text and roles
    def _seq(self, state: ProgramState, node: Seq) -> None:
        for item in node.items:
            self.apply(state, item)

    def _text(self, state: ProgramState, node: Text) -> None:
        if state.tracing and PLACEHOLDER_MARK in node.text:
            state.append(node.text[:node.text.index(PLACEHOLDER_MARK)])
            raise StopTrace("a program argument")
        state.append(node.text)

    @staticmethod
    def _arg(state: ProgramState, node: Arg) -> None:
        raise StopTrace(f"argument {node.name!r}")

    def _role(self, state: ProgramState, node: Role) -> None:
        self.apply(state, RoleBegin(node.role))
        if node.body is not None:
            self.apply(state, node.body)
        self.apply(state, RoleEnd(node.role))

    def _role_begin(self, state: ProgramState, node: RoleBegin) -> None:
        state.append(state.roles.begin(node.role, state.text(), state.backend.chat_template()))

    def _role_end(self, state: ProgramState, node: RoleEnd) -> None:
        state.append(state.roles.end(node.role, state.text(), state.backend.chat_template()))

    def _scope_begin(self, state: ProgramState, node: VarScopeBegin) -> None:
        state.open_var(node.name)
        state.scope_starts[node.name] = len(state.text())

    def _scope_end(self, state: ProgramState, node: VarScopeEnd) -> None:
        captured = state.text()[state.scope_starts.pop(node.name):]
        state.close_var(node.name, captured, captured)

    # ------------------------------------------------------------------ backend calls
    @staticmethod
    def _params(state: ProgramState, node: Gen) -> dict[str, Any]:
        params = dict(state.defaults)
        params.update(node.param_dict)
        return params

    def _gen(self, state: ProgramState, node: Gen) -> None:
        if state.tracing:
            raise StopTrace("gen")
        label = f"gen {node.name!r}" if node.name else "gen"
        params = self._params(state, node)
        name = node.name
        messages = state.messages() if state.roles.open_role is not None else None
        if name is not None:
            state.open_var(name)
        try:
            if state.stream:
                result = None
                for item in state.backend.stream(state.text(), params, messages):
                    if isinstance(item, str):
                        state.append(item)
                    else:
                        result = item
                assert result is not None
            else:
                result = state.backend.generate(state.text(), params, messages)
                state.append(result.text)
        except BackendError as e:
            raise CallError(f"{label}: {e}") from None
        state.add_meta(result.meta)
        if name is None:
            return
        value: Any = result.text
        if node.dtype is not None:
            from arborlm.api import DTYPE_CONVERT

            try:
                value = DTYPE_CONVERT[node.dtype](result.text)
            except ValueError as e:
                raise CallError(f"{label}: cannot convert {result.text!r} to {node.dtype.__name__}: {e}") from None
        if node.schema_model is not None:
            state.schema_models[name] = node.schema_model
        state.close_var(name, result.text, value, result.meta)

    def _select(self, state: ProgramState, node: Select) -> None:
        if state.tracing:
            raise StopTrace("select")
        label = f"select {node.name!r}" if node.name else "select"
        try:
            result = state.backend.select(state.text(), list(node.choices), node.method)
        except (BackendError, ValueError) as e:
            raise CallError(f"{label}: {e}") from None
        state.add_meta(result.meta)
        if node.name is not None:
            state.open_var(node.name)
        state.append(result.choice)
        if node.name is not None:
            state.close_var(node.name, result.choice, result.choice, result.meta)
