"""Pure-Python bookkeeping of KV slots and ReqToToken rows (the tensors live in kv_pool.py).

Slot ownership (design.md §4) — every slot in [1, num_slots) is in exactly one place:

    free list (SlotAllocator)      | running request, [prefix_len, kv_len) | radix tree
    ------------------------------ | ------------------------------------- | --------------------------
    handed out by alloc()          | req.slot_ids[prefix_len:]             | locked while a running
    returned by free()             |                                       | request uses it, else
                                   |                                       | evictable (LRU leaves)

    invariant: num_free + tree_size + running_owned == num_slots - 1     (slot 0 = padding)
"""

from __future__ import annotations


class OutOfSlots(Exception):
    """Raised when an allocation cannot be served even after eviction."""


class SlotAllocator:
    def __init__(self, num_slots: int) -> None:
        if num_slots < 2:
            raise ValueError("need at least one usable slot besides the padding slot 0")
        self.num_slots = num_slots
        # Pop from the end: recently freed slots are reused first (warm in cache).
        self._free: list[int] = list(range(num_slots - 1, 0, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def alloc(self, n: int) -> list[int]:
        if n > len(self._free):
            raise OutOfSlots(f"asked for {n} KV slots, {len(self._free)} free")
        if n == 0:
            return []
        out = self._free[-n:]
        del self._free[-n:]
        return out

    def free(self, slots: list[int]) -> None:
        self._free.extend(slots)

    def reset(self) -> None:
        self._free = list(range(self.num_slots - 1, 0, -1))

    def free_set(self) -> set[int]:
        return set(self._free)


class RowAllocator:
    """Rows of the ReqToToken table, one per running request."""

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows
        self._free = list(range(num_rows - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    def alloc(self) -> int:
        if not self._free:
            raise OutOfSlots("no free ReqToToken row (max_running_requests reached)")
        return self._free.pop()

    def free(self, row: int) -> None:
        self._free.append(row)
