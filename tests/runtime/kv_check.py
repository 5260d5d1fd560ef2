"""Helpers shared by the engine tests."""

from __future__ import annotations

from typing import Any


def snapshot(c: Any) -> list[tuple]:
    """Everything a read could change: structure, slots, locks and LRU stamps of every node."""
    return sorted((n.uid, tuple(n.key), tuple(n.value), n.lock_ref, n.last_access,
                   n.parent.uid if n.parent else None) for n in c._nodes())


def assert_kv_baseline(engine: Any) -> None:
    """Nothing runs and nothing is locked: every KV slot is on the free list or in the tree."""
    engine.check_invariants()
    s = engine.stats()
    assert s["num_running"] == 0 and s["num_waiting"] == 0
    assert s["protected_tokens"] == 0
    assert s["free_slots"] + s["tokens_in_tree"] == s["kv_total_tokens"]


class Slots:
    """Hands out fresh, unique slot ids 1, 2, 3, ... (never 0, never reused), like the pool's allocator."""

    def __init__(self) -> None:
        self.next = 1

    def take(self, n: int) -> list[int]:
        out = list(range(self.next, self.next + n))
        self.next += n
        return out
