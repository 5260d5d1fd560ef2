"""`arborlm serve` flags generated from EngineConfig's fields, so the two cannot drift.

Each field becomes `--field-name` with the field's type, default, choices and help text (declared
with `config.option`). Booleans get `--name / --no-name` (e.g. `--no-jump-forward`). The server's
own options (host, port, API key, log level, ...) are not engine configuration and are written by
hand in launch.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from arborlm.runtime.config import EngineConfig

# Field types a flag can parse; a field of another type needs an entry here (the tests build the
# parser, so a new field of an unsupported type fails there, not at a user's command line).
FLAG_TYPES: dict[type, type] = {int: int, str: str, float: float}


def _base_type(field_name: str, hint: Any) -> type:
    """`int | None` -> int; a plain type stays itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _base_type(field_name, args[0])
        raise TypeError(f"EngineConfig.{field_name}: no flag for the union type {hint}")
    if isinstance(hint, type):
        return hint
    raise TypeError(f"EngineConfig.{field_name}: no flag for the type {hint}")


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per EngineConfig field, defaulting to the field's default."""
    hints = typing.get_type_hints(EngineConfig)
    defaults = EngineConfig()
    group = parser.add_argument_group("engine options (EngineConfig fields)")
    for f in dataclasses.fields(EngineConfig):
        kind = _base_type(f.name, hints[f.name])
        help_text = f.metadata.get("help") or f"EngineConfig.{f.name}"
        default = getattr(defaults, f.name)
        if kind is bool:
            group.add_argument(flag_name(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=default, help=help_text)
            continue
        if kind not in FLAG_TYPES:
            raise TypeError(f"EngineConfig.{f.name}: no flag for the type {kind.__name__}; add it to FLAG_TYPES")
        choices = f.metadata.get("choices")
        if callable(choices):
            choices = choices()
        group.add_argument(flag_name(f.name), dest=f.name, type=FLAG_TYPES[kind], default=default,
                           choices=list(choices) if choices else None, help=help_text)


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The EngineConfig the parsed flags describe (raises ValueError on an invalid combination)."""
    return EngineConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EngineConfig)})
