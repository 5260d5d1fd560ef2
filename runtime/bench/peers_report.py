"""`arborlm bench peers`: the records a runner returns and the JSON line each (workload, system)
becomes: medians over the repeats and the ratios against every other system of the workload.

Pure data handling (no torch, no peers), so the tests check it on canned measurements.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunMeasurement:
    """One timed run of one system on one workload's inputs."""

    wall_s: float
    output_tokens: int
    prompt_tokens: int = 0
    cached_tokens: int = 0
    texts: list[str] = field(default_factory=list)
    # workload-specific timings (ttft_ms, decode_tok_s, itl_p99_ms, ...): medians over repeats
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)  # facts of the run (compile time, checks): as is


@dataclass
class SystemOutcome:
    """All repeats of one system on one workload, or why it did not run."""

    system: str
    runs: list[RunMeasurement] = field(default_factory=list)
    skipped_reason: str | None = None  # not installed / not applicable: never ran
    failure: str | None = None  # ran and raised: no numbers, the error instead
    info: dict[str, Any] = field(default_factory=dict)  # weights, version, settings: into the line as is


# Metrics compared between systems, and which direction is better. A ratio > 1 always means
# "this line's system is better" (faster, higher throughput, lower latency).
HIGHER_IS_BETTER = ("output_tok_s", "decode_tok_s")
LOWER_IS_BETTER = ("wall_s", "ttft_ms", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def summarize_outcome(workload: str, outcome: SystemOutcome,
                      score: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON line of one (workload, system) before ratios: medians over the runs. `score` holds
    output-quality numbers (accuracy, valid_share) computed from the texts."""
    line: dict[str, Any] = {"bench": "peers", "workload": workload, "system": outcome.system}
    line.update(extra or {})
    if outcome.skipped_reason is not None:
        return line | {"skipped": True, "reason": outcome.skipped_reason} | outcome.info
    if outcome.failure is not None:
        return line | {"failed": True, "error": outcome.failure} | outcome.info
    if not outcome.runs:
        raise ValueError(f"{workload}/{outcome.system}: no runs and no skip reason")
    runs = outcome.runs
    line.update({
        "repeats": len(runs),
        "wall_s": round(_median([r.wall_s for r in runs]), 3),
        "output_tokens": runs[0].output_tokens,
        # per-run throughput, then the median: robust to one slow run
        "output_tok_s": round(_median([r.output_tokens / r.wall_s for r in runs if r.wall_s > 0] or [0.0]), 1),
        "runs_s": [round(r.wall_s, 3) for r in runs],
    })
    if any(r.prompt_tokens for r in runs):
        line["prompt_tokens"] = runs[0].prompt_tokens
        line["cached_token_share"] = round(_median([r.cached_tokens / max(1, r.prompt_tokens) for r in runs]), 3)
    keys = sorted({k for r in runs for k in r.timings})
    for key in keys:
        vals = [r.timings[key] for r in runs if key in r.timings]
        line[key] = round(_median(vals), 2)
    line.update(runs[0].notes)
    line.update(score or {})
    line.update(outcome.info)
    return line


def _ratio(mine: float, theirs: float, higher_is_better: bool) -> float | None:
    if not mine or not theirs:
        return None
    return round(mine / theirs if higher_is_better else theirs / mine, 2)


def add_ratios(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every measured line of one workload `ratios: {other_system: {metric: r}}` against each
    other measured system (r > 1: this line's system is better on that metric)."""
    measured = [ln for ln in lines if not ln.get("skipped") and not ln.get("failed")]
    for line in measured:
        ratios: dict[str, dict[str, float | None]] = {}
        for other in measured:
            if other is line:
                continue
            per_metric: dict[str, float | None] = {}
            for key in HIGHER_IS_BETTER + LOWER_IS_BETTER:
                if key in line and key in other:
                    per_metric[key] = _ratio(line[key], other[key], key in HIGHER_IS_BETTER)
            ratios[other["system"]] = per_metric
        line["ratios"] = ratios
    return lines


def percentile_ms(values_s: list[float], pct: float) -> float:
    """Nearest-rank percentile of seconds, in milliseconds (0 for no values)."""
    if not values_s:
        return 0.0
    ordered = sorted(values_s)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))] * 1000
