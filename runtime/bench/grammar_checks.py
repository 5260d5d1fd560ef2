"""Per-schema checks run inside the forked compile child of `arborlm bench json` (compile_time.py):
label agreement of the compiled grammar with JSONSchemaBench's labelled instances, and the mask
time of a decode step at batch 16.

Agreement is checked at the token level, on the grammar the engine actually runs: the compact
instance is tokenized canonically and walked through a fresh matcher; it is accepted when every
token is allowed and the grammar may end there. (The llguidance engine allows only the canonical
tokens of forced text, so a tokenization that splits forced text differently is rejected: counted
as a disagreement, never hidden.)

Mask time: 16 matchers walk a valid instance (or, without one, as far as the grammar's forced text
and the first allowed token lead), matcher j started j tokens later, so the batch holds rows at
different states like a real batch; each step fills all 16 rows of one int32 bitmask."""

from __future__ import annotations

import json
import time
from typing import Any

BATCH = 16
MAX_MASK_STEPS = 48


def compact(x: Any) -> str:
    return json.dumps(x, separators=(",", ":"), ensure_ascii=False)


def token_accepts(g: Any, token_ids: list[int]) -> bool:
    m = g.matcher()
    for t in token_ids:
        if not m.try_advance(t):
            return False
    return m.is_accepting()


def label_agreement(g: Any, tok: Any, tests: list[dict]) -> dict[str, int]:
    agree = accepted_invalid = rejected_valid = 0
    for t in tests:
        acc = token_accepts(g, tok.encode(compact(t["data"]), add_special_tokens=False))
        agree += acc == bool(t["valid"])
        accepted_invalid += acc and not t["valid"]
        rejected_valid += (not acc) and bool(t["valid"])
    return {"labelled": len(tests), "agree": agree, "accepted_invalid": accepted_invalid,
            "rejected_valid": rejected_valid}


def _walk_ids(g: Any, tok: Any, tests: list[dict]) -> list[int]:
    """Token ids of a valid instance the grammar accepts, else a greedy walk of allowed tokens."""
    for t in tests:
        if t["valid"]:
            ids = tok.encode(compact(t["data"]), add_special_tokens=False)
            if token_accepts(g, ids):
                return ids[:MAX_MASK_STEPS + BATCH]
    m, ids = g.matcher(), []
    while len(ids) < MAX_MASK_STEPS + BATCH and not m.is_terminated():
        allowed = [x for x in m.allowed_tokens() if x != g.eos_token_id]
        if not allowed:
            break
        ids.append(allowed[len(allowed) // 2])
        m.advance(ids[-1])
    return ids


def mask_step_ms(g: Any, tok: Any, tests: list[dict]) -> list[float]:
    """Wall time (ms) of filling a batch-16 bitmask, per decode step along the walk."""
    from arborlm.kernels.bitmask import allocate_token_bitmask

    ids = _walk_ids(g, tok, tests)
    if not ids:
        return []
    matchers = [g.matcher() for _ in range(BATCH)]
    mask = allocate_token_bitmask(BATCH, g.vocab.vocab_size)
    times: list[float] = []
    for step in range(min(MAX_MASK_STEPS, len(ids))):
        t0 = time.perf_counter()
        for j, m in enumerate(matchers):
            m.fill_bitmask(mask[j])
        times.append((time.perf_counter() - t0) * 1000)
        for j, m in enumerate(matchers):
            pos = step - j  # matcher j starts j steps later
            if 0 <= pos < len(ids) and not m.is_terminated():
                m.advance(ids[pos])
    return times
