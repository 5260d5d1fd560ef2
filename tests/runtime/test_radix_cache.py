"""Radix prefix cache: unit tests, then a stateful property test against a naive reference."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from kv_check import Slots, snapshot

from arborlm.runtime.pyproc import python_code_argv
from arborlm.runtime.radix_cache import NoCache, RadixCache, RadixNode, make_cache


def depth(node: RadixNode) -> int:
    """Tokens from the root to the end of `node`."""
    d = 0
    while node.parent is not None:
        d += len(node.key)
        node = node.parent
    return d



# ---------------------------------------------------------------- unit tests


def test_empty_tree() -> None:
    c = RadixCache()
    assert c.match_prefix([1, 2, 3]) == ([], c.root)
    assert c.match_prefix([]) == ([], c.root)
    assert c.evict(10) == []
    assert (c.total_size(), c.evictable_size(), c.protected_size()) == (0, 0, 0)
    c.check_invariants()


def test_insert_then_match_exact_and_longer() -> None:
    c = RadixCache()
    assert c.insert([1, 2, 3], [10, 11, 12]) == 0
    slots, node = c.match_prefix([1, 2, 3])
    assert slots == [10, 11, 12] and depth(node) == 3
    slots, node = c.match_prefix([1, 2, 3, 4, 5])
    assert slots == [10, 11, 12] and depth(node) == 3
    assert c.match_prefix([9, 1]) == ([], c.root)
    c.check_invariants()


def test_partial_match_splits_edge() -> None:
    c = RadixCache()
    c.insert([1, 2, 3, 4], [10, 11, 12, 13])
    assert len(c.root.children) == 1 and len(c.root.children[1].key) == 4
    slots, node = c.claim_prefix([1, 2, 9])
    assert slots == [10, 11]
    assert node.key == [1, 2] and node.value == [10, 11] and depth(node) == 2
    (lower,) = node.children.values()
    assert lower.key == [3, 4] and lower.value == [12, 13] and lower.parent is node
    assert c.total_size() == 4 and c.evictable_size() == 4
    c.check_invariants()
    # The full sequence still matches through the split, with the same slots.
    assert c.match_prefix([1, 2, 3, 4])[0] == [10, 11, 12, 13]
    # A prefix ending inside an edge (no mismatch, just shorter) splits too.
    slots, node = c.claim_prefix([1, 2, 3])
    assert slots == [10, 11, 12] and depth(node) == 3 and node.key == [3]
    c.check_invariants()


def test_insert_num_present_and_duplicates_keep_tree_slots() -> None:
    c = RadixCache()
    assert c.insert([1, 2, 3], [10, 11, 12]) == 0
    # Same prefix, new tail: 3 present; the caller's 20..22 are duplicates, tree keeps 10..12.
    assert c.insert([1, 2, 3, 4, 5], [20, 21, 22, 23, 24]) == 3
    assert c.match_prefix([1, 2, 3, 4, 5])[0] == [10, 11, 12, 23, 24]
    # Diverging inside an edge: 2 present, split, new branch.
    assert c.insert([1, 2, 7], [30, 31, 32]) == 2
    assert c.match_prefix([1, 2, 7])[0] == [10, 11, 32]
    # Fully present (a prefix ending mid-edge): all duplicates.
    assert c.insert([1, 2, 3, 4], [40, 41, 42, 43]) == 4
    assert c.insert([], []) == 0
    assert sorted(c.all_slots()) == [10, 11, 12, 23, 24, 32]
    assert c.total_size() == 6
    c.check_invariants()
    with pytest.raises(AssertionError):
        c.insert([1, 2], [1])


def test_lock_unlock_counts_up_to_root() -> None:
    c = RadixCache()
    c.insert([1, 2, 3, 4], [10, 11, 12, 13])
    c.insert([1, 2, 5, 6], [20, 21, 22, 23])  # splits at [1, 2]
    _, a = c.match_prefix([1, 2, 3, 4])
    _, b = c.match_prefix([1, 2, 5, 6])
    shared = a.parent
    assert shared is b.parent and shared.key == [1, 2]
    c.lock(a)
    assert (a.lock_ref, shared.lock_ref, b.lock_ref, c.root.lock_ref) == (1, 1, 0, 0)
    assert c.protected_size() == 4 and c.evictable_size() == 2
    c.lock(b)
    c.lock(a)
    assert (a.lock_ref, shared.lock_ref, b.lock_ref) == (2, 3, 1)
    assert c.protected_size() == 6 and c.evictable_size() == 0
    c.check_invariants()
    c.unlock(a)
    c.unlock(a)
    assert (a.lock_ref, shared.lock_ref) == (0, 1)
    assert c.protected_size() == 4 and c.evictable_size() == 2
    c.unlock(b)
    assert c.protected_size() == 0 and c.evictable_size() == 6
    c.check_invariants()
    with pytest.raises(AssertionError):
        c.unlock(b)
    c.lock(c.root)  # the empty match's node: a no-op on sizes
    assert c.protected_size() == 0
    c.unlock(c.root)


def test_split_of_locked_edge_keeps_handles_and_sizes() -> None:
    c = RadixCache()
    c.insert([1, 2, 3, 4], [10, 11, 12, 13])
    _, node = c.match_prefix([1, 2, 3, 4])
    c.lock(node)
    slots, mid = c.claim_prefix([1, 2])  # splits the locked edge
    assert slots == [10, 11] and mid.lock_ref == 1 and node.parent is mid
    assert c.protected_size() == 4 and c.evictable_size() == 0
    c.check_invariants()
    c.unlock(node)
    assert c.protected_size() == 0 and c.evictable_size() == 4
    c.check_invariants()


def test_evict_lru_order_only_unlocked_leaves() -> None:
    c = RadixCache()
    c.insert([1, 1], [10, 11])
    c.insert([2, 2], [20, 21])
    c.insert([3, 3], [30, 31])
    c.claim_prefix([1, 1])  # 1 is now the most recent; 2 the least
    _, n3 = c.claim_prefix([3, 3])
    c.lock(n3)
    assert c.evict(1) == [20, 21]  # whole leaf, LRU first
    assert c.evict(1) == [10, 11]
    assert c.evict(5) == []  # only the locked one is left
    assert c.total_size() == 2 and c.protected_size() == 2
    c.check_invariants()
    c.unlock(n3)
    assert c.evict(100) == [30, 31]
    assert c.total_size() == 0
    c.check_invariants()


def test_evicting_a_leaf_makes_parent_evictable() -> None:
    c = RadixCache()
    c.insert([1, 2, 3], [10, 11, 12])
    c.insert([1, 2, 4], [20, 21, 22])  # tree: [1,2] -> {[3], [4]}
    c.insert([9], [90])  # accessed after everything under [1, 2]
    freed = c.evict(3)  # [3] and [4] are LRU; then [1, 2] becomes a leaf, older than [9]
    assert freed == [12, 22, 10, 11]
    assert c.match_prefix([9])[0] == [90]
    c.check_invariants()


def test_evict_does_not_free_parent_of_locked_child() -> None:
    c = RadixCache()
    c.insert([1, 2, 3], [10, 11, 12])
    c.insert([1, 2, 4], [20, 21, 22])
    _, n = c.match_prefix([1, 2, 3])
    c.lock(n)
    assert c.evict(100) == [22]
    assert sorted(c.all_slots()) == [10, 11, 12]
    c.check_invariants()


def test_evict_frees_at_least_requested() -> None:
    c = RadixCache()
    c.insert([1] * 5, [1, 2, 3, 4, 5])
    c.insert([2] * 5, [6, 7, 8, 9, 10])
    freed = c.evict(6)
    assert sorted(freed) == list(range(1, 11))
    assert c.evict(0) == []


def test_reset() -> None:
    c = RadixCache()
    c.insert([1, 2], [3, 4])
    c.lock(c.match_prefix([1, 2])[1])
    c.reset()
    assert c.total_size() == 0 and c.match_prefix([1, 2]) == ([], c.root)
    c.check_invariants()


def test_check_invariants_catches_corruption() -> None:
    c = RadixCache()
    c.insert([1, 2], [3, 4])
    c.insert([5], [3])  # a duplicate slot handed in by a buggy caller
    with pytest.raises(AssertionError, match="duplicate"):
        c.check_invariants()
    c = RadixCache()
    c.insert([1, 2], [3, 4])
    c.root.children[1].value.pop()
    with pytest.raises(AssertionError, match="slots for"):
        c.check_invariants()
    c = RadixCache()
    c.insert([1, 2], [3, 4])
    c.root.children[1].lock_ref = 1
    with pytest.raises(AssertionError, match="lock_ref"):
        c.check_invariants()


def test_deep_chain_no_recursion_limit() -> None:
    c = RadixCache()
    n = sys.getrecursionlimit() + 100
    for i in range(1, n):  # each insert extends the previous one by one token: a chain of n nodes
        c.insert(list(range(i)), list(range(i)))
    c.check_invariants()
    assert len(c.evict(n * n)) == n - 1


def test_nocache() -> None:
    c = make_cache(disable=True)
    assert isinstance(c, NoCache) and not c.enabled
    assert c.match_prefix([1, 2, 3]) == ([], c.root) == c.claim_prefix([1, 2, 3])
    assert c.match_len([1, 2, 3]) == 0
    assert c.insert([1, 2, 3], [7, 8, 9]) == 3  # "all present": the caller frees all its slots
    assert c.match_prefix([1, 2, 3]) == ([], c.root)
    c.lock(c.root)
    c.unlock(c.root)
    assert c.evict(10) == [] and c.all_slots() == []
    assert (c.total_size(), c.evictable_size(), c.protected_size()) == (0, 0, 0)
    c.check_invariants()
    c.reset()
    assert isinstance(make_cache(disable=False), RadixCache) and make_cache(False).enabled


def test_long_prompt_match_is_fast() -> None:
    rng = random.Random(0)
    c = RadixCache()
    slots = Slots()
    system = [rng.randrange(50_000) for _ in range(1500)]
    for _ in range(300):  # many entries sharing a long prefix, plus unrelated ones
        tail = [rng.randrange(50_000) for _ in range(rng.randrange(1, 500))]
        ids = (system if rng.random() < 0.7 else []) + tail
        dup = c.insert(ids, slots.take(len(ids)))
        assert dup <= len(ids)
    prompt = system + [rng.randrange(50_000) for _ in range(500)]
    t0 = time.perf_counter()
    for _ in range(200):
        got, node = c.match_prefix(prompt)
    elapsed = time.perf_counter() - t0
    assert len(got) >= 1500 and depth(node) == len(got)
    assert elapsed < 1.0, f"200 matches of a 2000-token prompt took {elapsed:.3f}s"


def test_module_imports_no_torch_or_numpy() -> None:
    code = (
        "import sys, arborlm.runtime.radix_cache; "
        "bad = {'torch', 'numpy'} & set(sys.modules); assert not bad, bad"
    )
    subprocess.run(python_code_argv(code), check=True)


# ---------------------------------------------------------------- property test

TOKENS = st.lists(st.integers(0, 2), max_size=10)


class RadixMachine(RuleBasedStateMachine):
    """Reference: `ref` maps every cached prefix (a tuple) to the slot of its last token, so the
    cached set is prefix-closed and the longest match is the longest key that is a prefix of ids.
    Locks are (sequence, node) handles; a locked token is any prefix of a locked sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = RadixCache()
        self.alloc = Slots()
        self.ref: dict[tuple[int, ...], int] = {}
        self.locks: list[tuple[tuple[int, ...], RadixNode]] = []
        self.handed_in: set[int] = set()
        self.freed: set[int] = set()  # by evict
        self.dups: set[int] = set()  # returned to the caller by insert

    def ref_match(self, ids: list[int]) -> list[int]:
        out = []
        for i in range(len(ids)):
            s = self.ref.get(tuple(ids[: i + 1]))
            if s is None:
                break
            out.append(s)
        return out

    def locked_prefixes(self) -> set[tuple[int, ...]]:
        return {seq[: i + 1] for seq, _ in self.locks for i in range(len(seq))}

    def do_match(self, ids: list[int]) -> tuple[list[int], RadixNode]:
        slots, node = self.cache.claim_prefix(ids)
        assert slots == self.ref_match(ids)
        assert depth(node) == len(slots), "the returned node must end exactly at the match"
        return slots, node

    @rule(ids=TOKENS)
    def match(self, ids: list[int]) -> None:
        before = snapshot(self.cache)
        slots, node = self.cache.match_prefix(ids)
        assert slots == self.ref_match(ids) and self.cache.match_len(ids) == len(slots)
        assert depth(node) <= len(slots) and slots[:depth(node)] == self.ref_match(ids)[:depth(node)]
        assert snapshot(self.cache) == before, "match_prefix changed the tree"

    @rule(ids=TOKENS)
    def claim(self, ids: list[int]) -> None:
        self.do_match(ids)

    @rule(ids=TOKENS)
    def insert(self, ids: list[int]) -> None:
        slots = self.alloc.take(len(ids))
        self.handed_in.update(slots)
        expect = len(self.ref_match(ids))
        num_present = self.cache.insert(ids, slots)
        assert num_present == expect
        self.dups.update(slots[:num_present])
        for i in range(num_present, len(ids)):
            self.ref[tuple(ids[: i + 1])] = slots[i]

    @rule(ids=TOKENS)
    def match_and_lock(self, ids: list[int]) -> None:
        slots, node = self.do_match(ids)
        self.cache.lock(node)
        self.locks.append((tuple(ids[: len(slots)]), node))

    @precondition(lambda self: self.locks)
    @rule(data=st.data())
    def unlock(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.locks) - 1))
        _, node = self.locks.pop(i)
        self.cache.unlock(node)

    @precondition(lambda self: self.locks)
    @rule(data=st.data(), suffix=TOKENS)
    def finish_locked(self, data: st.DataObject, suffix: list[int]) -> None:
        """The scheduler's finish path: insert prefix (the tree's own slots) + own slots, free
        the duplicates among its own, then unlock the old node."""
        seq, node = self.locks.pop(data.draw(st.integers(0, len(self.locks) - 1)))
        prefix_slots = [self.ref[seq[: i + 1]] for i in range(len(seq))]
        own = self.alloc.take(len(suffix))
        self.handed_in.update(own)
        ids = list(seq) + suffix
        expect = len(self.ref_match(ids))
        num_present = self.cache.insert(ids, prefix_slots + own)
        assert num_present == expect >= len(seq)
        self.dups.update(own[: num_present - len(seq)])
        for i in range(num_present, len(ids)):
            self.ref[tuple(ids[: i + 1])] = (prefix_slots + own)[i]
        self.cache.unlock(node)

    @rule(n=st.integers(0, 12))
    def evict(self, n: int) -> None:
        leaves = [x for x in self.cache._nodes() if x.parent is not None and not x.children and not x.lock_ref]
        lru = min(leaves, key=lambda x: (x.last_access, x.uid), default=None)
        lru_slots = list(lru.value) if lru is not None else []
        evictable = self.cache.evictable_size()
        locked_slots = {self.ref[p] for p in self.locked_prefixes()}
        freed = self.cache.evict(n)
        if n > 0 and lru is not None:
            assert freed[: len(lru_slots)] == lru_slots, "evict did not start with the LRU unlocked leaf"
        assert len(freed) == len(set(freed))
        assert not set(freed) & locked_slots, "evict freed a locked token"
        assert len(freed) >= min(n, evictable) and len(freed) <= evictable
        freed_set = set(freed)
        self.ref = {k: v for k, v in self.ref.items() if v not in freed_set}
        self.freed.update(freed)
        assert all(k[:-1] in self.ref for k in self.ref if len(k) > 1), "evict left a hole"

    @invariant()
    def consistent(self) -> None:
        c = self.cache
        c.check_invariants()
        tree = c.all_slots()
        assert sorted(tree) == sorted(self.ref.values())
        assert c.total_size() == len(self.ref) == len(tree)
        assert c.protected_size() == len(self.locked_prefixes())
        assert c.evictable_size() == c.total_size() - c.protected_size()
        parts = [self.freed, self.dups, set(tree)]
        assert sum(map(len, parts)) == len(self.handed_in), "a slot was lost or counted twice"
        assert set().union(*parts) == self.handed_in


RadixMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
test_radix_machine = RadixMachine.TestCase
