"""Program: a decorated `def f(s, ...)` with run / run_batch / arun / arun_batch / trace.

Keyword arguments of `run` that are not the function's parameters are run-level defaults for every
gen (names of the engine's sampling parameters: temperature, max_new_tokens, top_p, ...); a gen's
own arguments win.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from arborlm.api import get_default_backend
from arborlm.state import BRANCH_POOL, ProgramState
from arborlm.tracer import Trace, trace_program

SAMPLING_DEFAULT_NAMES = frozenset({
    "max_new_tokens", "min_new_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
    "frequency_penalty", "presence_penalty", "repetition_penalty", "stop", "stop_token_ids", "ignore_eos",
    "skip_special_tokens", "jump_forward", "return_logprob",
})
AUTO_MAX_THREADS = 64
MIN_PREFIX_CHARS = 16  # a constant prefix shorter than this is not worth a cache_prefix call


class ProgramError(RuntimeError):
    """A program body raised; `__cause__` is the original exception."""


class BatchResult(list):
    """The states of a batch, in input order, plus the batch's token accounting."""

    def __init__(self, states: list[ProgramState], prefix: str, prefix_tokens: int) -> None:
        super().__init__(states)
        self.prefix = prefix  # the constant prefix sent once before the items
        self.prefix_tokens = prefix_tokens

    @property
    def failed(self) -> list[int]:
        return [i for i, s in enumerate(self) if s.error() is not None]

    @property
    def prompt_tokens(self) -> int:
        return sum(s.meta().prompt_tokens for s in self)

    @property
    def cached_tokens(self) -> int:
        return sum(s.meta().cached_tokens for s in self)

    @property
    def cached_share(self) -> float:
        """Share of the items' prompt tokens served from the radix cache."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class Program:
    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.name = func.__name__
        params = list(inspect.signature(func).parameters.values())
        if not params:
            raise TypeError(f"program {self.name!r} must take the state as its first parameter")
        self.arg_names = {p.name for p in params[1:]}
        self.takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
        functools.update_wrapper(self, func)

    def __repr__(self) -> str:
        return f"Program({self.name!r})"

    # ------------------------------------------------------------------ helpers
    def _split(self, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        args, defaults = {}, {}
        for k, v in kwargs.items():
            if k in self.arg_names or (k not in SAMPLING_DEFAULT_NAMES and self.takes_kwargs):
                args[k] = v
            elif k in SAMPLING_DEFAULT_NAMES:
                defaults[k] = v
            else:
                raise TypeError(f"program {self.name!r} got an unexpected argument {k!r} (neither a parameter "
                                f"of the function nor a sampling default: {sorted(SAMPLING_DEFAULT_NAMES)})")
        return args, defaults

    @staticmethod
    def _backend(backend: Any) -> Any:
        backend = backend or get_default_backend()
        if backend is None:
            raise RuntimeError("no backend: call al.set_default_backend(al.Engine(...)) or pass backend=")
        return backend

    def _execute(self, state: ProgramState, args: dict[str, Any]) -> ProgramState:
        try:
            self.func(state, **args)
        except BaseException as e:  # kept on the state; run() re-raises, run_batch marks the item
            state.set_error(e)
        finally:
            state.finish()
        return state

    def _raise(self, state: ProgramState) -> None:
        err = state.error()
        if err is not None:
            raise ProgramError(f"program {self.name!r} failed: {type(err).__name__}: {err}") from err

    # ------------------------------------------------------------------ running
    def run(self, *, backend: Any = None, stream: bool = False, **kwargs: Any) -> ProgramState:
        """Run once. With `stream=True` the body runs on a pool thread and the state returns at once
        (read it with `text_iter()`, `s["name"]` blocks until the variable exists)."""
        args, defaults = self._split(kwargs)
        state = ProgramState(self._backend(backend), self.name, defaults, stream=stream)
        if stream:
            BRANCH_POOL.submit(self._execute, state, args)
            return state
        self._execute(state, args)
        self._raise(state)
        return state

    def trace(self, *, backend: Any = None, **placeholder_args: Any) -> Trace:
        """Record the program's IR up to its first non-constant node (None args are placeholders)."""
        return trace_program(self.func, self._backend(backend), placeholder_args, self.name)

    def run_batch(self, items: list[dict[str, Any]], *, backend: Any = None, num_threads: int | str = "auto",
                  progress_bar: bool = False, **defaults: Any) -> BatchResult:
        """Run every item concurrently; a failing item is marked (`state.error()`), not raised."""
        backend = self._backend(backend)
        items = list(items)
        bad = [k for k in defaults if k not in SAMPLING_DEFAULT_NAMES]
        if bad:
            raise TypeError(f"run_batch: unknown sampling default(s) {bad}")
        if num_threads == "auto":
            num_threads = max(1, min(len(items), AUTO_MAX_THREADS, max(16, 4 * (os.cpu_count() or 1))))
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive int or 'auto', not {num_threads!r}")
        prefix, prefix_tokens = self._send_prefix(backend, items)
        states = [ProgramState(backend, self.name) for _ in items]
        with ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix=f"arborlm-{self.name}") as pool:
            futures = {}
            for i, item in enumerate(items):
                try:
                    args, item_defaults = self._split(dict(item))
                except TypeError as e:
                    states[i].set_error(e)
                    states[i].finish()
                    continue
                states[i].defaults = {**defaults, **item_defaults}
                futures[pool.submit(self._execute, states[i], args)] = i
            done = as_completed(futures)
            if progress_bar:
                from tqdm.auto import tqdm

                done = tqdm(done, total=len(futures), desc=self.name)
            for _ in done:  # wait for every program, ticking the progress bar as each finishes
                continue
        return BatchResult(states, prefix, prefix_tokens)

    def _send_prefix(self, backend: Any, items: list[dict[str, Any]]) -> tuple[str, int]:
        if not items:
            return "", 0
        keys = [k for k in items[0] if k in self.arg_names or self.takes_kwargs]
        prefix = self.trace(backend=backend, **dict.fromkeys(keys)).constant_prefix
        if len(prefix) < MIN_PREFIX_CHARS:
            return prefix, 0
        return prefix, backend.cache_prefix(prefix).prompt_tokens

    async def arun(self, *, backend: Any = None, stream: bool = False, **kwargs: Any) -> ProgramState:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(BRANCH_POOL, functools.partial(self.run, backend=backend, stream=stream,
                                                                         **kwargs))

    async def arun_batch(self, items: list[dict[str, Any]], **kwargs: Any) -> BatchResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(self.run_batch, items, **kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)
