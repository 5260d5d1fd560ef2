"""arborlm: a structured-generation runtime for language models.

    import arborlm as al
    al.set_default_backend(al.Engine(model="smollm2"))

    @al.program
    def qa(s, question):
        s += al.user(question)
        s += al.assistant(al.gen("answer", max_tokens=64))

`import arborlm` is cheap: the runtime (torch, transformers) is imported when a backend is built.
"""

from __future__ import annotations

from typing import Any

from arborlm.api import (
    assistant,
    gen,
    get_default_backend,
    program,
    select,
    set_default_backend,
    system,
    user,
)

__version__ = "0.1.0"
__all__ = ["Engine", "OpenAICompatible", "RuntimeEndpoint", "assistant", "gen", "get_default_backend", "program",
           "select", "set_default_backend", "system", "user"]

_BACKENDS = {
    "Engine": "arborlm.backends.engine",
    "RuntimeEndpoint": "arborlm.backends.runtime_endpoint",
    "OpenAICompatible": "arborlm.backends.openai_compat",
}


def __getattr__(name: str) -> Any:  # backends import the runtime / HTTP clients only when used
    if name in _BACKENDS:
        import importlib

        return getattr(importlib.import_module(_BACKENDS[name]), name)
    raise AttributeError(f"module 'arborlm' has no attribute {name!r}")
