"""Radix cache reads are read-only and eviction is incremental (the scheduler asks the cache about
every waiting request every step, and evicts on many steps: neither may cost a walk or a rewrite
of the whole tree)."""

from __future__ import annotations

import pytest
from kv_check import Slots, snapshot

from arborlm.runtime.radix_cache import RadixCache, RadixNode


def depth(node: RadixNode) -> int:
    d = 0
    while node.parent is not None:
        d += len(node.key)
        node = node.parent
    return d


def test_match_prefix_is_read_only() -> None:
    c = RadixCache()
    c.insert([1, 2, 3, 4], [10, 11, 12, 13])
    c.insert([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 15, 16])
    c.insert([7, 8], [17, 18])
    before = snapshot(c)
    slots, node = c.match_prefix([1, 2, 9])  # ends inside the [1, 2, 3, 4] edge
    assert slots == [10, 11] and node is c.root  # no node ends at 2 and none is made
    slots, node = c.match_prefix([1, 2, 3, 4, 5])
    assert slots == [10, 11, 12, 13, 15] and depth(node) == 4
    assert c.match_prefix([7, 8, 9])[0] == [17, 18]
    assert [c.match_len(x) for x in ([1, 2, 9], [1, 2, 3, 4, 5], [7, 8, 9], [5])] == [2, 5, 2, 0]
    assert snapshot(c) == before
    c.check_invariants()


def test_match_prefix_does_not_touch_lru() -> None:
    c = RadixCache()
    c.insert([1, 1], [10, 11])
    c.insert([2, 2], [20, 21])
    for _ in range(3):
        c.match_prefix([1, 1])  # reads (the lpm policy) must not make [1, 1] recent
    assert c.evict(1) == [10, 11]


def test_evict_is_incremental(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evicting a few leaves of a big tree does not rebuild a heap over all of its leaves."""
    import arborlm.runtime.radix_cache as rc

    c = RadixCache()
    slots = Slots()
    for i in range(5000):
        c.insert([i // 50, i], slots.take(2) if i % 50 == 0 else [0, slots.take(1)[0]])
    c.check_invariants()
    heapified: list[int] = []
    real = rc.heapq.heapify
    monkeypatch.setattr(rc.heapq, "heapify", lambda h: (heapified.append(len(h)), real(h))[1])
    freed = [c.evict(1) for _ in range(100)]
    assert all(len(f) == 1 for f in freed)
    assert sum(heapified) < 5000, f"heapify over {sum(heapified)} entries for 100 small evictions"
    c.check_invariants()
