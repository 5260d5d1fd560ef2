"""How arborlm starts Python child processes: always with `-P` (safe path).

Why: `python -m pkg` and `python -c` put the working directory first on `sys.path`. Run from a
checkout of this repository, that makes our top-level `kernels/` folder shadow the hub's `kernels`
distribution, which transformers >= 5.25 imports at start-up (`from kernels import CUDAProperties`).
`-P` (Python >= 3.11) leaves the working directory off `sys.path`; arborlm itself is found through
its installed (or editable) package mapping, never through the working directory.
"""

from __future__ import annotations

import sys


def python_module_argv(module: str, *args: str) -> list[str]:
    """argv that runs `python -P -m module args...` with this interpreter."""
    return [sys.executable, "-P", "-m", module, *args]


def python_code_argv(code: str) -> list[str]:
    """argv that runs `python -P -c code` with this interpreter."""
    return [sys.executable, "-P", "-c", code]
