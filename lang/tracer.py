"""`prog.trace(**placeholder_args)`: run the body on placeholders and record IR nodes up to the
first one whose text is not known before the run (an argument's value, a gen, a select, a fork, a
read of a variable). The text applied up to there is the program's constant prefix, which
`run_batch` sends once (`cache_prefix`) so every item finds it in the radix cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arborlm.ir import Arg, Expr, StopTrace
from arborlm.state import ProgramState


@dataclass
class Trace:
    nodes: list[Expr]
    constant_prefix: str  # the text every run starts with
    stopped_by: str  # what ended the constant part ("gen", "argument 'question'", "end", ...)


class _TracingState(ProgramState):
    def get_var(self, name: str) -> Any:
        raise StopTrace(f"read of variable {name!r}")


def trace_program(func: Any, backend: Any, placeholder_args: dict[str, Any], name: str = "program") -> Trace:
    """Arguments given as None (or an `Arg`) become placeholders; other values are used as given."""
    state = _TracingState(backend, name, tracing=True)
    args = {k: Arg(k) if v is None else v for k, v in placeholder_args.items()}
    stopped = "end"
    try:
        func(state, **args)
    except StopTrace as e:
        stopped = str(e)
    except Exception as e:  # any other use of a placeholder ends the constant part too
        stopped = f"{type(e).__name__}: {e}"
    return Trace(list(state.nodes), state.text(), stopped)
