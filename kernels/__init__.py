"""arborlm.kernels: attention over the token-indexed KV pool, grammar bitmask application, native
CPU kernels; each with a pure-torch reference beside it (design.md §1, §4, §6).

The bitmask entry points are re-exported here (`arborlm.kernels.apply_token_bitmask`), lazily so
that importing one kernel module does not import the others."""

from __future__ import annotations

from typing import Any

__all__ = ["allocate_token_bitmask", "apply_token_bitmask"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from arborlm.kernels import bitmask

        return getattr(bitmask, name)
    raise AttributeError(f"module 'arborlm.kernels' has no attribute {name!r}")
