"""Failure isolation for one scheduler step: a request whose forward row or sampling raises fails
alone (through `on_fail`), and every other request proceeds exactly as if it had not been batched
with it. Batching does not change outputs, so rerunning rows one by one keeps their tokens."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from arborlm.runtime.types import Batch, Req

logger = logging.getLogger("arborlm.scheduler")

OnFail = Callable[[Req, BaseException], None]


def forward_isolated(runner: Any, batch: Batch, on_fail: OnFail) -> list[tuple[Batch, Any]]:
    """(batch part, its logits): the whole batch, or, if that raises, each row alone (same slots,
    same K/V), without the rows that still raise."""
    try:
        return [(batch, runner.forward(batch))]
    except Exception as e:
        if len(batch) == 1:
            on_fail(batch.reqs[0], e)
            return []
        logger.warning("forward of %d rows failed (%s: %s); retrying row by row", len(batch), type(e).__name__, e)
    parts = []
    for i, req in enumerate(batch.reqs):
        row = batch.row(i)
        try:
            parts.append((row, runner.forward(row)))
        except Exception as e:
            on_fail(req, e)
    return parts


def sample_isolated(sample_fn: Any, logits: Any, rows: list[int], reqs: list[Req],
                    on_fail: OnFail) -> list[tuple[Req, int, float | None, Any]]:
    """(req, token, logprob, top logprobs) for the logits `rows` of `reqs`; if sampling the batch
    raises, each row alone, without the rows that still raise."""
    contiguous = rows == list(range(len(rows)))  # every row samples: a view, no gather
    try:
        results = [(sample_fn(logits[: len(rows)] if contiguous else logits[rows], reqs), reqs)]
    except Exception:
        results = []
        for i, req in zip(rows, reqs, strict=True):
            try:
                results.append((sample_fn(logits[i : i + 1], [req]), [req]))
            except Exception as e:
                on_fail(req, e)
    picked = []
    for res, rs in results:
        for j, req in enumerate(rs):
            picked.append((req, int(res.next_token_ids[j]), res.logprobs[j] if res.logprobs else None,
                           res.top_logprobs[j] if res.top_logprobs else None))
    return picked
