"""`arborlm bench scheduler`: the scheduler's own bookkeeping per step, without a model.

A null runner (no tensors) and a null sampler drive the real `Scheduler`: a radix tree of about
10k nodes fills most of the KV pool, `--num-waiting` requests whose prompts share prefixes of
different lengths with it wait every step (the lpm policy matches each one), running requests
decode a few tokens, finish and insert into the tree, and admissions evict. The time of one
`step()` is therefore its bookkeeping alone: policy, admission, KV accounting, insert, evict.

The peer is the cache as it was before: `match_prefix` split edges and touched the LRU clock on
every read, and `evict` rebuilt a heap over the whole tree on every call. Both run the same
requests in this process, alternated; one JSON line per system, then one with the ratio.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

from arborlm.runtime import policy
from arborlm.runtime.bench.provenance import emit
from arborlm.runtime.config import EngineConfig
from arborlm.runtime.kv_manager import KVManager
from arborlm.runtime.radix_cache import RadixCache, RadixNode
from arborlm.runtime.scheduler import Scheduler
from arborlm.runtime.types import Batch, Req, SamplingParams

VOCAB = 32000


class FullScanCache(RadixCache):
    """The peer: reads mutate (split + touch) and eviction scans the whole tree each call."""

    def match_prefix(self, ids: list[int]) -> tuple[list[int], RadixNode]:
        return self.claim_prefix(ids)

    def match_len(self, ids: list[int]) -> int:
        return len(self.claim_prefix(ids)[0])

    def _offer_leaf(self, node: RadixNode) -> None:
        """No candidate heap: eviction finds leaves by scanning."""

    def check_invariants(self) -> None:
        self._leaf_heap = [(n.last_access, n.uid, n) for n in self._nodes()
                           if n.parent is not None and not n.children and n.lock_ref == 0]
        super().check_invariants()

    def evict(self, num_tokens: int) -> list[int]:
        freed: list[int] = []
        if num_tokens <= 0:
            return freed
        heap: list[tuple[int, int, RadixNode]] = []
        stack = [self.root]
        while stack:
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
            leaf.parent = None
            self._num_nodes -= 1
            freed.extend(leaf.value)
            self._evictable -= len(leaf.key)
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, parent.uid, parent))
        return freed


class NullLogits:
    """Stands in for the logits tensor: any row selection is itself."""

    def __getitem__(self, _: Any) -> NullLogits:
        return self


@dataclass
class NullRunner:
    num_slots: int
    max_context_len: int = 4096
    vocab_size: int = VOCAB

    def forward(self, batch: Batch) -> NullLogits:
        return NullLogits()


@dataclass
class NullSample:
    next_token_ids: list[int]
    logprobs: None = None
    top_logprobs: None = None


class NullSampler:
    """Deterministic next tokens (never an EOS: requests end by max_new_tokens)."""

    def __init__(self) -> None:
        self.rng = random.Random(1)

    def __call__(self, logits: Any, reqs: list[Req]) -> NullSample:
        return NullSample([self.rng.randrange(10, VOCAB) for _ in reqs])


@dataclass
class Workload:
    tree_ids: list[list[int]]  # sequences inserted before the run (the ~10k-node tree)
    prompts: list[list[int]]  # requests, in arrival order


def make_workload(num_nodes: int, num_prompts: int, seed: int = 0) -> Workload:
    rng = random.Random(seed)

    def toks(n: int) -> list[int]:
        return [rng.randrange(10, VOCAB) for _ in range(n)]

    systems = [toks(48) for _ in range(64)]
    tree_ids = []
    for _ in range(num_nodes):  # each insert adds a leaf and usually splits an edge
        base = rng.choice(tree_ids) if tree_ids and rng.random() < 0.5 else rng.choice(systems)
        cut = rng.randrange(1, len(base))
        tree_ids.append(base[:cut] + toks(rng.randrange(2, 8)))
    prompts = []
    for _ in range(num_prompts):
        base = rng.choice(tree_ids)
        prompts.append(base[: rng.randrange(1, len(base))] + toks(rng.randrange(4, 24)))
    return Workload(tree_ids, prompts)


def build_scheduler(cache: RadixCache, w: Workload, num_slots: int, max_running: int,
                    num_nodes: int) -> Scheduler:
    config = EngineConfig(max_total_tokens=num_slots - 1, max_running_requests=max_running,
                          max_prefill_tokens=256, chunked_prefill_size=64, schedule_policy="lpm")
    sched = Scheduler(config, NullRunner(num_slots), NullSampler(), tokenizer=None, eos_token_ids={2})
    sched.kv = KVManager(num_slots, max_running, cache)
    for ids in w.tree_ids:
        if cache._num_nodes >= num_nodes:
            break
        slots = sched.kv.slots.alloc(len(ids))
        num_present = cache.insert(ids, slots)
        sched.kv.slots.free(slots[:num_present])
    return sched


def run_system(cache: RadixCache, w: Workload, args: argparse.Namespace) -> dict[str, Any]:
    sched = build_scheduler(cache, w, args.num_slots, args.max_running, args.tree_nodes)
    tree_nodes = cache._num_nodes
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0, ignore_eos=True)
    prompts = iter(w.prompts)
    step_ms: list[float] = []
    n_added = 0
    for _ in range(args.steps):
        while len(sched.waiting) < args.num_waiting:  # keep the queue full
            sched.add_request(Req(f"r{n_added}", next(prompts), params))
            n_added += 1
        t0 = time.perf_counter()
        sched.step()
        step_ms.append((time.perf_counter() - t0) * 1e3)
    sched.check_invariants()
    step_ms.sort()
    return {"tree_nodes_at_start": tree_nodes, "tree_nodes_at_end": cache._num_nodes,
            "median_step_ms": round(statistics.median(step_ms), 4), "mean_step_ms": round(statistics.fmean(step_ms), 4),
            "p90_step_ms": round(step_ms[int(0.9 * (len(step_ms) - 1))], 4),
            "max_step_ms": round(step_ms[-1], 4), "requests_added": n_added,
            "generated_tokens": sched.num_generated_tokens}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    # lpm orders by prefix match only up to LPM_MAX_QUEUE waiting requests (then fcfs); measure the
    # walk over every waiting request, the case the read-only match_prefix is for.
    if args.force_lpm:
        policy.LPM_MAX_QUEUE = max(policy.LPM_MAX_QUEUE, args.num_waiting)
    w = make_workload(args.tree_nodes, args.num_waiting + args.steps * args.max_running * 2)
    results: dict[str, list[dict[str, Any]]] = {"arborlm": [], "full_scan_peer": []}
    for _ in range(args.repeats):  # alternate: the machine's load moves under both alike
        results["arborlm"].append(run_system(RadixCache(), w, args))
        results["full_scan_peer"].append(run_system(FullScanCache(), w, args))
    lines = []
    for system, runs in results.items():
        best = min(runs, key=lambda r: r["median_step_ms"])
        lines.append({"workload": "scheduler", "system": system, "num_waiting": args.num_waiting,
                      "force_lpm": args.force_lpm,
                      "steps": args.steps, "repeats": args.repeats,
                      "median_step_ms_per_repeat": [r["median_step_ms"] for r in runs], **best})
    ours, peer = (statistics.median(r["median_step_ms"] for r in results[s]) for s in results)
    lines.append({"workload": "scheduler", "metric": "median_step_ms", "arborlm": ours, "full_scan_peer": peer,
                  "speedup": round(peer / ours, 2), "under_1ms": ours < 1.0})
    return lines


def main(args: argparse.Namespace) -> int:
    for line in run(args):
        emit(line)
    return 0


def add_scheduler_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scheduler", help="scheduler bookkeeping per step (10k-node tree, 256 waiting), "
                                         "vs the full-scan cache", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--tree-nodes", type=int, default=10_000, help="approximate radix tree size at the start")
    p.add_argument("--num-waiting", type=int, default=256, help="requests kept waiting every step")
    p.add_argument("--steps", type=int, default=100, help="timed scheduler steps per run")
    p.add_argument("--max-running", type=int, default=32, help="max_running_requests")
    p.add_argument("--max-new-tokens", type=int, default=4, help="tokens each request decodes")
    p.add_argument("--num-slots", type=int, default=40_000, help="KV pool slots (the tree fills most)")
    p.add_argument("--repeats", type=int, default=3, help="alternated runs per system")
    p.add_argument("--force-lpm", action=argparse.BooleanOptionalAction, default=True,
                   help="lpm matches every waiting request even past policy.LPM_MAX_QUEUE (where it "
                        "otherwise falls back to fcfs)")
    p.set_defaults(func=main)
