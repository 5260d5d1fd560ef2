"""What a benchmark number was measured with, stamped on every bench JSON line (`"env"`), so that the
number can be reproduced: package versions, Python, the CPU and its kernel-relevant flags."""

from __future__ import annotations

import functools
import json
import os
import platform
from importlib import metadata
from typing import Any, TextIO

from arborlm.runtime.cpu_info import cpu_name, kernel_flags

# Distributions whose version changes what a benchmark measures (peers included where installed).
PACKAGES = ("arborlm", "torch", "transformers", "tokenizers", "llguidance", "outlines-core", "numpy",
            "llama-cpp-python", "outlines")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def provenance() -> dict[str, Any]:
    return {"versions": {name: _version(name) for name in PACKAGES}, "python": platform.python_version(),
            "cpu": cpu_name(), "num_cpus": os.cpu_count(), "cpu_flags": kernel_flags()}


def emit(line: dict[str, Any], out: TextIO | None = None) -> None:
    """Print one bench result as a JSON line with its provenance (and append it to `out`)."""
    text = json.dumps({**line, "env": provenance()})
    print(text, flush=True)
    if out is not None:
        out.write(text + "\n")
        out.flush()
