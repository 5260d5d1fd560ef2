"""Token-level radix prefix cache (page size 1): token ids -> K/V slot indices.

Why a radix tree: requests that share a prompt prefix (system prompt, few-shot examples, a
`fork`'s common history) reuse the K/V already computed for it instead of recomputing and
storing it again. Every edge holds a run of token ids (`key`) and the K/V slot of each (`value`).

Pure Python on purpose (no torch, no numpy, no request objects): the scheduler owns the policy
of who locks what; this module only answers "what is cached", "take ownership of these slots"
and "give back slots nobody is using". See design.md §4-§5 for the slot-ownership invariant.
"""

from __future__ import annotations

import heapq
from typing import Union


class RadixNode:
    """One edge of the tree plus the node it ends at. The root has an empty key."""

    __slots__ = ("children", "parent", "key", "value", "lock_ref", "direct_locks", "last_access", "uid")

    def __init__(self, parent: RadixNode | None, key: list[int], value: list[int], uid: int) -> None:
        self.children: dict[int, RadixNode] = {}  # first token of the child's key -> child
        self.parent = parent
        self.key = key
        self.value = value
        self.lock_ref = 0  # locks on this node or any descendant: > 0 means protected
        self.direct_locks = 0  # lock() calls on exactly this node (lets check_invariants be exact)
        self.last_access = 0  # logical clock, not wall time: deterministic LRU, no ties
        self.uid = uid  # heap tie-breaker so nodes are never compared

    def __repr__(self) -> str:
        return f"RadixNode(uid={self.uid}, len={len(self.key)}, lock_ref={self.lock_ref})"


def _common_len(key: list[int], ids: list[int], pos: int) -> int:
    """Length of the common prefix of `key` and `ids[pos:]`, without slicing `ids[pos:]`
    (that would make a long prompt's walk quadratic). Fast path: one C-level slice compare."""
    n = min(len(key), len(ids) - pos)
    if n == len(key) and ids[pos : pos + n] == key:
        return n
    k = 0
    while k < n and key[k] == ids[pos + k]:
        k += 1
    return k


class RadixCache:
    """Radix tree over token ids. Sizes are counted in tokens (= slots)."""

    enabled = True  # lets callers skip work that only makes sense with a real cache

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Drop everything. The caller must already have freed (or forgotten) the tree's slots."""
        self._uid = 0
        self._clock = 0
        self.root = self._new_node(None, [], [])
        self._evictable = 0
        self._protected = 0

    def _new_node(self, parent: RadixNode | None, key: list[int], value: list[int]) -> RadixNode:
        self._uid += 1
        return RadixNode(parent, key, value, self._uid)

    def _touch(self, node: RadixNode) -> None:
        self._clock += 1
        node.last_access = self._clock

    def _split(self, child: RadixNode, k: int) -> RadixNode:
        """Split `child`'s edge after `k` tokens (0 < k < len(key)); return the new upper node.
        The upper node inherits child's lock_ref (every lock counted on child passes through it),
        so sizes do not change and node handles held by callers stay valid."""
        parent = child.parent
        assert parent is not None and 0 < k < len(child.key)
        mid = self._new_node(parent, child.key[:k], child.value[:k])
        mid.lock_ref = child.lock_ref
        mid.last_access = child.last_access
        parent.children[child.key[0]] = mid
        child.key, child.value, child.parent = child.key[k:], child.value[k:], mid
        mid.children[child.key[0]] = child
        return mid

    def match_prefix(self, ids: list[int]) -> tuple[list[int], RadixNode]:
        """Slots of the longest cached prefix of `ids`, and the node ending exactly there
        (splitting an edge if the match stops inside it). Touches the path for LRU.
        The caller usually matches `ids[:-1]`: the last token must be computed to get logits."""
        node, pos, slots = self.root, 0, []
        while pos < len(ids):
            child = node.children.get(ids[pos])
            if child is None:
                break
            k = _common_len(child.key, ids, pos)
            self._touch(child)
            if k < len(child.key):
                child = self._split(child, k)
            slots.extend(child.value)
            pos += k
            node = child
        return slots, node

    def insert(self, ids: list[int], slots: list[int]) -> int:
        """Cache `ids` with K/V in `slots`; return num_present, the leading tokens already cached.

        Ownership of the caller's `slots`, by index range:
            [0, num_present)         already in the tree: the tree keeps ITS slots. Any of the
                                     caller's slots here that differ from the tree's (i.e. not
                                     its own locked prefix) are duplicates the CALLER must free.
            [num_present, len(ids))  now owned by the tree (a new evictable leaf).
        """
        assert len(ids) == len(slots), f"insert: {len(ids)} ids but {len(slots)} slots"
        node, pos = self.root, 0
        while pos < len(ids):
            child = node.children.get(ids[pos])
            if child is None:
                leaf = self._new_node(node, list(ids[pos:]), list(slots[pos:]))
                self._touch(leaf)
                node.children[ids[pos]] = leaf
                self._evictable += len(leaf.key)
                return pos
            k = _common_len(child.key, ids, pos)
            self._touch(child)
            if k < len(child.key):
                child = self._split(child, k)
            pos += k
            node = child
        return pos

    def lock(self, node: RadixNode) -> None:
        """Protect `node` and its ancestors from eviction (a running request reads their K/V)."""
        node.direct_locks += 1
        while node is not self.root:
            if node.lock_ref == 0:
                self._evictable -= len(node.key)
                self._protected += len(node.key)
            node.lock_ref += 1
            node = node.parent  # type: ignore[assignment]

    def unlock(self, node: RadixNode) -> None:
        """Undo one `lock(node)`; the path becomes evictable where no other lock remains."""
        assert node.direct_locks > 0, f"unlock of {node!r} which is not locked"
        node.direct_locks -= 1
        while node is not self.root:
            assert node.lock_ref > 0, f"lock_ref underflow at {node!r}"
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._protected -= len(node.key)
                self._evictable += len(node.key)
            node = node.parent  # type: ignore[assignment]

    def evict(self, num_tokens: int) -> list[int]:
        """Free at least `num_tokens` slots if that many are evictable, else all evictable ones.
        Removes whole unlocked leaves, least recently used first; a parent left childless (and
        unlocked) joins the heap. May free more than asked (a leaf goes whole)."""
        freed: list[int] = []
        if num_tokens <= 0:
            return freed
        heap: list[tuple[int, int, RadixNode]] = []
        stack = [self.root]
        while stack:  # collect unlocked leaves (iterative: deep chains must not hit recursion limits)
            n = stack.pop()
            if n.children:
                stack.extend(n.children.values())
            elif n is not self.root and n.lock_ref == 0:
                heap.append((n.last_access, n.uid, n))
        heapq.heapify(heap)
        while heap and len(freed) < num_tokens:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.key[0]]
            freed.extend(leaf.value)
            self._evictable -= len(leaf.key)
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, parent.uid, parent))
        return freed

    def evictable_size(self) -> int:
        return self._evictable

    def protected_size(self) -> int:
        return self._protected

    def total_size(self) -> int:
        return self._evictable + self._protected

    def _nodes(self) -> list[RadixNode]:
        out, stack = [], [self.root]
        while stack:
            n = stack.pop()
            out.append(n)
            stack.extend(n.children.values())
        return out

    def all_slots(self) -> list[int]:
        """Every slot the tree owns (unordered); for tests and the pool's global invariant."""
        return [s for n in self._nodes() for s in n.value]

    def check_invariants(self) -> None:
        """Assert the tree's structure and counters are consistent (O(tree); for tests)."""
        root = self.root
        assert root.parent is None and not root.key and not root.value, "root must be empty"
        evictable = protected = 0
        seen: set[int] = set()
        for n in self._nodes():
            for first, c in n.children.items():
                assert c.parent is n, f"{c!r} has the wrong parent"
                assert c.key and c.key[0] == first, f"{c!r} is filed under token {first}"
            if n is root:
                continue
            assert n.key, f"{n!r} has an empty edge"
            assert len(n.value) == len(n.key), f"{n!r}: {len(n.value)} slots for {len(n.key)} tokens"
            want = n.direct_locks + sum(c.lock_ref for c in n.children.values())
            assert n.lock_ref == want, f"{n!r}: lock_ref {n.lock_ref} != direct + children = {want}"
            if n.lock_ref > 0:
                protected += len(n.key)
            else:
                evictable += len(n.key)
            dup = seen.intersection(n.value)
            assert not dup and len(set(n.value)) == len(n.value), f"duplicate slots at {n!r}: {dup}"
            seen.update(n.value)
        assert evictable == self._evictable, f"evictable counter {self._evictable} != {evictable}"
        assert protected == self._protected, f"protected counter {self._protected} != {protected}"


class NoCache:
    """The radix cache's interface with nothing cached (`disable_radix_cache=True`).

    Never takes ownership: `insert` returns len(ids), i.e. "everything was already present",
    so the caller frees ALL its slots, exactly as it frees duplicates with a real cache.
    Consequence: never insert slots a running request still reads (e.g. to share a chunk
    mid-flight) without checking `enabled` first; with NoCache they would be freed under it.
    """

    enabled = False

    def __init__(self) -> None:
        self.root = RadixNode(None, [], [], 0)

    def reset(self) -> None:
        """Nothing is cached, so nothing to forget."""

    def match_prefix(self, ids: list[int]) -> tuple[list[int], RadixNode]:
        return [], self.root

    def insert(self, ids: list[int], slots: list[int]) -> int:
        assert len(ids) == len(slots), f"insert: {len(ids)} ids but {len(slots)} slots"
        return len(ids)

    def lock(self, node: RadixNode) -> None:
        assert node is self.root, "NoCache only ever hands out its root"

    def unlock(self, node: RadixNode) -> None:
        assert node is self.root, "NoCache only ever hands out its root"

    def evict(self, num_tokens: int) -> list[int]:
        return []

    def evictable_size(self) -> int:
        return 0

    def protected_size(self) -> int:
        return 0

    def total_size(self) -> int:
        return 0

    def all_slots(self) -> list[int]:
        return []

    def check_invariants(self) -> None:
        assert not self.root.children, "NoCache must stay empty"


PrefixCache = Union[RadixCache, NoCache]


def make_cache(disable: bool) -> PrefixCache:
    """The scheduler's one entry point: `make_cache(config.disable_radix_cache)`."""
    return NoCache() if disable else RadixCache()
