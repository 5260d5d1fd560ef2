"""arborlm.runtime: Engine (offline), server, scheduler, radix cache, memory, executor, sampler."""

from __future__ import annotations

from typing import Any

__all__ = ["Engine", "EngineConfig", "SamplingParams"]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not import torch
    if name == "Engine":
        from arborlm.runtime.engine import Engine

        return Engine
    if name == "EngineConfig":
        from arborlm.runtime.config import EngineConfig

        return EngineConfig
    if name == "SamplingParams":
        from arborlm.runtime.types import SamplingParams

        return SamplingParams
    raise AttributeError(name)
