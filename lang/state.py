"""ProgramState: the `s` a program body receives — text, messages, variables, per-call meta, error.

Text only grows; every piece appended is also kept as a chunk, so `text_iter()` (whole text) and
`text_iter(name)` (one variable) can stream while the program runs. A variable has an Event, so
`s["x"]` blocks until it exists while the program (or a fork branch) still runs.

A state applies nodes synchronously in the caller's thread, except a fork branch: its nodes queue
up and run in order on a shared, bounded thread pool, so `for f in forks: f += gen(...)` runs the
branches concurrently without a thread per state.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from arborlm.backends.base import CallMeta
from arborlm.chat import RoleTracker
from arborlm.ir import Expr, RoleBegin, RoleEnd, VarScopeBegin, VarScopeEnd, as_expr

BRANCH_POOL = ThreadPoolExecutor(max_workers=128, thread_name_prefix="arborlm-branch")


class _VarLog:
    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.done = threading.Event()
        self.raw: str = ""
        self.value: Any = None


class ProgramState:
    def __init__(self, backend: Any, program_name: str = "program", defaults: dict[str, Any] | None = None,
                 stream: bool = False, tracing: bool = False) -> None:
        from arborlm.interpreter import Interpreter

        self.backend = backend
        self.program_name = program_name
        self.defaults = dict(defaults or {})
        self.stream = stream
        self.tracing = tracing
        self.nodes: list[Expr] = []  # every node applied, in order (the recorded IR)
        self.roles = RoleTracker()
        self._text = ""
        self._chunks: list[str] = []
        self._cond = threading.Condition()
        self._vars: dict[str, _VarLog] = {}
        self._open_vars: list[str] = []
        self.scope_starts: dict[str, int] = {}
        self._metas: dict[str, Any] = {}
        self.schema_models: dict[str, Any] = {}  # gen name -> the Pydantic class of its json_schema
        self._totals = CallMeta()
        self.num_calls = 0
        self._error: BaseException | None = None
        self._finished = threading.Event()
        self._interp = Interpreter()
        # fork branches: nodes queue up here and run on BRANCH_POOL
        self._queued: deque[Expr] | None = None
        self._draining = False
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()

    # ------------------------------------------------------------------ adding nodes
    def __iadd__(self, expr: Any) -> ProgramState:
        self.apply(as_expr(expr))
        return self

    def apply(self, node: Expr) -> None:
        if self._queued is None:
            self._interp.apply(self, node)
            return
        with self._lock:
            self._queued.append(node)
            self._idle.clear()
            if not self._draining:
                self._draining = True
                BRANCH_POOL.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queued:
                    self._draining = False
                    self._idle.set()
                    return
                node = self._queued.popleft()
            if self._error is not None:
                continue
            try:
                self._interp.apply(self, node)
            except BaseException as e:  # kept on the branch; join() re-raises it
                self.set_error(e)

    def wait_idle(self) -> None:
        self._idle.wait()

    # ------------------------------------------------------------------ text (used by the interpreter)
    def append(self, piece: str) -> None:
        if not piece:
            return
        with self._cond:
            self._text += piece
            self._chunks.append(piece)
            for name in self._open_vars:
                self._vars[name].chunks.append(piece)
            self._cond.notify_all()

    def open_var(self, name: str) -> None:
        log = self._vars.get(name)
        if log is None or log.done.is_set():
            self._vars[name] = _VarLog()
        self._open_vars.append(name)

    def close_var(self, name: str, raw: str, value: Any, meta: Any = None) -> None:
        with self._cond:
            if name in self._open_vars:
                self._open_vars.remove(name)
            log = self._vars.setdefault(name, _VarLog())
            log.raw, log.value = raw, value
            if meta is not None:
                self._metas[name] = meta
            log.done.set()
            self._cond.notify_all()

    def set_var(self, name: str, value: Any, meta: Any = None) -> None:
        self.open_var(name)
        self.close_var(name, value if isinstance(value, str) else str(value), value, meta)

    def add_meta(self, meta: CallMeta) -> None:
        with self._cond:
            self._totals.add(meta)
            self.num_calls += 1

    def set_error(self, e: BaseException) -> None:
        with self._cond:
            self._error = e
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._finished.set()
            self._cond.notify_all()

    # ------------------------------------------------------------------ reading
    def text(self) -> str:
        return self._text

    def __getitem__(self, name: str) -> Any:
        return self.get_var(name)

    def __contains__(self, name: str) -> bool:
        log = self._vars.get(name)
        return log is not None and log.done.is_set()

    def _running(self) -> bool:
        return not self._finished.is_set() and (self.stream or self._queued is not None) and not (
            self._queued is not None and self._idle.is_set())

    def _log(self, name: str) -> _VarLog:
        while True:
            log = self._vars.get(name)
            if log is not None and log.done.wait(0.02):
                return log
            if self._error is not None:
                raise RuntimeError(f"variable {name!r} is missing: the program failed: {self._error}") from self._error
            if log is None and not self._running():
                raise KeyError(f"no variable {name!r}; have {sorted(self.variables())}")

    def get_var(self, name: str) -> Any:
        return self._log(name).value

    def variables(self) -> dict[str, Any]:
        return {k: v.value for k, v in self._vars.items() if v.done.is_set()}

    def parsed(self, name: str) -> Any:
        """The JSON a `json_schema` gen produced: a validated Pydantic object or the decoded JSON."""
        import json

        log = self._log(name)
        node_model = self.schema_models.get(name)
        if node_model is not None:
            return node_model.model_validate_json(log.raw)
        return json.loads(log.raw)

    def messages(self) -> list[dict[str, str]]:
        """The conversation so far as OpenAI-format messages."""
        return self.roles.current(self._text)

    def meta(self, name: str | None = None) -> Any:
        """Totals over the state's calls (prompt, cached and completion tokens), or one call's meta."""
        if name is None:
            m = CallMeta()
            m.add(self._totals)
            return m
        self._log(name)
        if name not in self._metas:
            raise KeyError(f"variable {name!r} came from no backend call")
        return self._metas[name]

    def error(self) -> BaseException | None:
        return self._error

    # ------------------------------------------------------------------ streaming
    def _source(self, name: str | None) -> tuple[list[str], Any]:
        if name is None:
            return self._chunks, lambda: self._finished.is_set() or self._error is not None
        def done() -> bool:
            log = self._vars.get(name)
            return (log is not None and log.done.is_set()) or self._finished.is_set() or self._error is not None
        return (self._vars[name].chunks if name in self._vars else None), done  # type: ignore[return-value]

    def _next_chunks(self, name: str | None, index: int) -> tuple[list[str], bool]:
        with self._cond:
            while True:
                chunks, done = self._source(name)
                chunks = chunks or []
                if len(chunks) > index or done():
                    return chunks[index:], done() and len(chunks) == index
                self._cond.wait(0.1)

    def text_iter(self, name: str | None = None) -> Iterator[str]:
        """Text deltas as they are generated: the whole text, or variable `name` only."""
        index = 0
        while True:
            new, end = self._next_chunks(name, index)
            if end:
                return
            index += len(new)
            yield from new

    async def text_async_iter(self, name: str | None = None) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        index = 0
        while True:
            new, end = await loop.run_in_executor(BRANCH_POOL, self._next_chunks, name, index)
            if end:
                return
            index += len(new)
            for piece in new:
                yield piece

    def wait(self) -> ProgramState:
        """Block until a `stream=True` run has finished."""
        self._finished.wait()
        return self

    # ------------------------------------------------------------------ roles, scopes, forks
    @contextmanager
    def _role(self, role: str) -> Iterator[None]:
        self.apply(RoleBegin(role))
        yield
        self.apply(RoleEnd(role))

    def system(self) -> Any:
        return self._role("system")

    def user(self) -> Any:
        return self._role("user")

    def assistant(self) -> Any:
        return self._role("assistant")

    @contextmanager
    def var_scope(self, name: str) -> Iterator[None]:
        """Capture all text added inside the block as variable `name`."""
        self.apply(VarScopeBegin(name))
        yield
        self.apply(VarScopeEnd(name))

    def fork(self, num_branches: int) -> Any:
        from arborlm.fork import fork_state

        return fork_state(self, num_branches)

    def branch_copy(self) -> ProgramState:
        """A fork branch: the same text, messages and variables; its nodes run on the branch pool."""
        child = ProgramState(self.backend, self.program_name, self.defaults, self.stream, self.tracing)
        child._text = self._text
        child.roles = self.roles.copy()
        for name, log in self._vars.items():
            if log.done.is_set():
                child.set_var(name, log.value, self._metas.get(name))
                child._vars[name].raw = log.raw
        child.schema_models = dict(self.schema_models)
        child._queued = deque()
        return child

    def __repr__(self) -> str:
        return f"ProgramState({self.program_name!r}, text={self._text[-60:]!r}, vars={sorted(self._vars)})"
