"""Token-level radix prefix cache (page size 1): token ids -> K/V slot indices.

Why a radix tree: requests that share a prompt prefix (system prompt, few-shot examples, a
`fork`'s common history) reuse the K/V already computed for it instead of recomputing and
storing it again. Every edge holds a run of token ids (`key`) and the K/V slot of each (`value`).

Pure Python on purpose (no torch, no numpy, no request objects): the scheduler owns the policy
of who locks what; this module only answers "what is cached", "take ownership of these slots"
and "give back slots nobody is using". See design.md §4-§5 for the slot-ownership invariant.

Reads are read-only: `match_prefix` (the lpm policy asks it about every waiting request every
step) neither splits edges nor touches the LRU clock; `claim_prefix` is the mutating match of a
request about to lock its prefix. `evict` is incremental: unlocked leaves are kept in a lazy heap
updated as nodes are touched, unlocked and emptied, so no call walks the whole tree.
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
        self._num_nodes = 0  # excluding the root
        # Eviction candidates: (last_access, uid, node), pushed whenever a node may have become an
        # unlocked leaf or was touched. Entries go stale (node locked, got children, touched again,
        # evicted) and are skipped when popped; the heap is rebuilt when stale ones dominate.
        self._leaf_heap: list[tuple[int, int, RadixNode]] = []

    def _new_node(self, parent: RadixNode | None, key: list[int], value: list[int]) -> RadixNode:
        self._uid += 1
        if parent is not None:
            self._num_nodes += 1
        return RadixNode(parent, key, value, self._uid)

    def _touch(self, node: RadixNode) -> None:
        self._clock += 1
        node.last_access = self._clock
        self._offer_leaf(node)

    def _offer_leaf(self, node: RadixNode) -> None:
        """Make `node` an eviction candidate if it is an unlocked leaf now (O(log n))."""
        if node.children or node.lock_ref or node is self.root:
            return
        heapq.heappush(self._leaf_heap, (node.last_access, node.uid, node))
        if len(self._leaf_heap) > 2 * self._num_nodes + 64:
            self._rebuild_leaf_heap()

    def _is_candidate(self, entry: tuple[int, int, RadixNode]) -> bool:
        last_access, _, node = entry
        return (node.parent is not None and not node.children and node.lock_ref == 0
                and node.last_access == last_access)

    def _rebuild_leaf_heap(self) -> None:
        """Drop stale entries (amortised: runs after at least as many pushes as there are nodes)."""
        live = {id(e[2]): e for e in self._leaf_heap if self._is_candidate(e)}
        self._leaf_heap = list(live.values())
        heapq.heapify(self._leaf_heap)

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
        """Slots of the longest cached prefix of `ids`, and the deepest node whose whole path is
        inside the match (when the match ends inside an edge, that edge's node is NOT returned:
        its depth is less than len(slots)). Read-only: no edge split, no LRU touch, so a policy
        may call it for every waiting request every step. Use `claim_prefix` for a match that
        will be locked. The caller usually matches `ids[:-1]`: the last token must be computed."""
        node, pos, slots = self.root, 0, []
        num_ids = len(ids)
        while pos < num_ids:
            child = node.children.get(ids[pos])
            if child is None:
                break
            key = child.key
            end = pos + len(key)
            if end <= num_ids and ids[pos:end] == key:  # the usual case: the whole edge matches
                slots += child.value
                pos = end
                node = child
                continue
            slots += child.value[: _common_len(key, ids, pos)]
            break
        return slots, node

    def match_len(self, ids: list[int]) -> int:
        """len(match_prefix(ids)[0]) without building the slot list (the lpm policy's question)."""
        node, pos, num_ids = self.root, 0, len(ids)
        while pos < num_ids:
            child = node.children.get(ids[pos])
            if child is None:
                break
            key = child.key
            end = pos + len(key)
            if end <= num_ids and ids[pos:end] == key:
                pos = end
                node = child
                continue
            return pos + _common_len(key, ids, pos)
        return pos

    def claim_prefix(self, ids: list[int]) -> tuple[list[int], RadixNode]:
        """The match a request is about to lock (admission): the same slots as `match_prefix`, but
        the edge where the match ends is split so the returned node ends exactly there, and the
        path counts as used now (LRU)."""
        node, pos, slots = self.root, 0, []
        while pos < len(ids):
            child = node.children.get(ids[pos])
            if child is None:
                break
            k = _common_len(child.key, ids, pos)
            if k < len(child.key):
                child = self._split(child, k)
            self._touch(child)
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
                self._offer_leaf(node)
            node = node.parent  # type: ignore[assignment]

    def evict(self, num_tokens: int) -> list[int]:
        """Free at least `num_tokens` slots if that many are evictable, else all evictable ones.
        Removes whole unlocked leaves, least recently used first; a parent left childless (and
        unlocked) becomes a candidate. May free more than asked (a leaf goes whole). Incremental:
        O((leaves removed + stale entries skipped) log n), never a walk over the whole tree."""
        freed: list[int] = []
        while self._leaf_heap and len(freed) < num_tokens:
            entry = heapq.heappop(self._leaf_heap)
            if not self._is_candidate(entry):
                continue
            leaf = entry[2]
            parent = leaf.parent
            assert parent is not None
            del parent.children[leaf.key[0]]
            leaf.parent = None  # detached: its other heap entries are stale
            self._num_nodes -= 1
            freed.extend(leaf.value)
            self._evictable -= len(leaf.key)
            self._offer_leaf(parent)
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
        nodes = self._nodes()
        assert self._num_nodes == len(nodes) - 1, f"node counter {self._num_nodes} != {len(nodes) - 1}"
        candidates = {id(e[2]) for e in self._leaf_heap if self._is_candidate(e)}
        for n in nodes:
            if n is not root and not n.children and n.lock_ref == 0:
                assert id(n) in candidates, f"{n!r} is an unlocked leaf but not an eviction candidate"


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

    def match_len(self, ids: list[int]) -> int:
        return 0

    def claim_prefix(self, ids: list[int]) -> tuple[list[int], RadixNode]:
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
