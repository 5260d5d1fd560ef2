"""KV ownership of running requests: slots, ReqToToken rows and the radix cache, in one place.

The radix cache never sees a request; this manager translates. Per request (see types.py):

    req.slot_ids[0 : prefix_len)        tree-owned, locked through req.last_node
    req.slot_ids[prefix_len : kv_len)   owned by the request, freed or handed to the tree on release

Transitions and where slots go:

    admit            tree slots of the longest cached prefix are locked, become [0, prefix_len)
    alloc            free-list slots appended to the request's own range
    cache_progress   the computed tokens are inserted; duplicates [prefix_len, num_present) freed,
                     the request's slot_ids rewritten to the tree's slots, lock moved to the new node
    truncate         own slots past a new kv_len go back to the free list (jump-forward re-tokenize)
    release          like cache_progress, then unlock; own slots all end in the tree or free list
"""

from __future__ import annotations

from typing import Any

from arborlm.runtime.memory import OutOfSlots, RowAllocator, SlotAllocator
from arborlm.runtime.types import Req


class KVManager:
    def __init__(self, num_slots: int, num_rows: int, cache: Any) -> None:
        self.slots = SlotAllocator(num_slots)
        self.rows = RowAllocator(num_rows)
        self.cache = cache
        self.num_slots = num_slots

    # ---- capacity ----
    def available(self) -> int:
        """Slots obtainable now: free plus evictable (unlocked) tree slots."""
        return self.slots.num_free + self.cache.evictable_size()

    def _ensure_free(self, n: int) -> None:
        if self.slots.num_free < n:
            self.slots.free(self.cache.evict(n - self.slots.num_free))
        if self.slots.num_free < n:
            raise OutOfSlots(f"need {n} KV slots, {self.slots.num_free} free after eviction")

    # ---- request lifecycle ----
    def match_len(self, ids: list[int]) -> int:
        """How many leading tokens of `ids` the cache holds; read-only (policies call it often)."""
        return self.cache.match_len(ids)

    def admit(self, req: Req, max_match: int) -> None:
        """Give the request a table row and lock its longest cached prefix (at most max_match)."""
        assert req.req_pool_idx is None and not req.slot_ids
        req.req_pool_idx = self.rows.alloc()
        slots, node = self.cache.claim_prefix(req.fill_ids[:max_match])
        self.cache.lock(node)
        req.last_node = node
        req.slot_ids = list(slots)
        req.prefix_len = len(slots)
        req.table_dirty = True

    def alloc(self, req: Req, n: int) -> None:
        self._ensure_free(n)
        req.slot_ids.extend(self.slots.alloc(n))

    def cache_progress(self, req: Req) -> None:
        """Insert the request's computed tokens into the tree now (so requests behind it share
        them before it finishes) and move its lock to the deeper node."""
        if not self.cache.enabled:  # NoCache takes nothing: the request keeps its own slots
            return
        ids = req.fill_ids[: req.kv_len]
        num_present = self.cache.insert(ids, req.slot_ids)
        if num_present > req.prefix_len:
            self.slots.free(req.slot_ids[req.prefix_len:num_present])
        slots, node = self.cache.claim_prefix(ids)
        self.cache.lock(node)
        self.cache.unlock(req.last_node)
        req.last_node = node
        req.slot_ids = list(slots)
        req.prefix_len = len(slots)
        req.table_dirty = True

    def truncate(self, req: Req, new_kv_len: int) -> None:
        """Drop K/V of positions >= new_kv_len (they must be the request's own)."""
        if new_kv_len >= req.kv_len:
            return
        assert new_kv_len >= req.prefix_len, "cannot truncate into the tree-owned prefix"
        self.slots.free(req.slot_ids[new_kv_len:])
        del req.slot_ids[new_kv_len:]

    def release(self, req: Req, keep_in_cache: bool = True) -> None:
        """The request stops running (finished, aborted or retracted): its computed tokens go to
        the tree (or the free list), its lock and row are released."""
        if req.req_pool_idx is None:
            return
        own = req.slot_ids[req.prefix_len:]
        if keep_in_cache and req.kv_len > 0:
            num_present = self.cache.insert(req.fill_ids[: req.kv_len], req.slot_ids)
            # [prefix_len, num_present): duplicates of tree slots -> free; [num_present, kv_len): tree
            self.slots.free(req.slot_ids[req.prefix_len:max(num_present, req.prefix_len)])
        else:
            self.slots.free(own)
        self.cache.unlock(req.last_node)
        self.rows.free(req.req_pool_idx)
        req.req_pool_idx = None
        req.last_node = None
        req.slot_ids = []
        req.prefix_len = 0

    def flush(self) -> None:
        self.cache.reset()
        self.slots.reset()

    # ---- accounting ----
    def check_invariants(self, running: list[Req]) -> None:
        self.cache.check_invariants()
        running_owned = sum(r.owned_len for r in running if r.req_pool_idx is not None)
        total = self.slots.num_free + self.cache.total_size() + running_owned
        assert total == self.num_slots - 1, (
            f"KV accounting broken: free {self.slots.num_free} + tree {self.cache.total_size()} "
            f"+ running-owned {running_owned} = {total} != {self.num_slots - 1}"
        )
        free = self.slots.free_set()
        assert len(free) == self.slots.num_free, "a slot is on the free list twice"
        assert 0 not in free, "the padding slot 0 was freed"
        for r in running:
            if r.req_pool_idx is None:
                continue
            own = set(r.slot_ids[r.prefix_len:])
            assert not (own & free), f"request {r.rid} owns a free slot"
            assert len(own) == r.owned_len, f"request {r.rid} holds a slot twice"
        locked = sum(1 for r in running if r.req_pool_idx is not None)
        assert self.rows.num_free + locked == self.rows.num_rows, "ReqToToken rows leaked"
