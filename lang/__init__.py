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

import sys
from pathlib import Path
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


def _drop_checkout_root_from_path() -> None:
    """Remove this source checkout's root from `sys.path` (it is there when Python was started in it
    without -P). The root's folders `lang/ runtime/ constrain/ kernels/` are arborlm's parts, reached
    through the package mapping; on the path, `kernels/` would shadow the hub `kernels` package that
    transformers imports. Only a root that holds our pyproject and kernels/native_cpu.cpp is dropped."""
    root = Path(__file__).resolve().parent.parent
    if not ((root / "pyproject.toml").is_file() and (root / "kernels" / "native_cpu.cpp").is_file()):
        return
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    shadow = sys.modules.get("kernels")
    if shadow is not None and Path(getattr(shadow, "__file__", None) or "/").resolve().parent == root / "kernels":
        del sys.modules["kernels"]


_drop_checkout_root_from_path()


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
