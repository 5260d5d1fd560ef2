"""JSONSchemaBench coverage: per subset, how many schemas we compile (honestly) vs how many plain
outlines-core `build_regex_from_schema` converts, and how our regexes agree with the benchmark's
labelled instances. Wire-up: `arborlm bench json --coverage` calls `coverage_report(data_dir)`.

Plain outlines-core conversion runs in a forked, memory-capped child: on some schemas it aborts the
process on a failed allocation."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from .regex_gen import UnsupportedSchema
from .schema import schema_to_regex
from .schema_guard import guarded_build_regex

SUBSETS = ("Github_trivial", "Github_easy", "Glaiveai2K", "Kubernetes", "JsonSchemaStore")


def load_subset(data_dir: str | Path, subset: str) -> list[dict]:
    path = Path(data_dir) / "jsonschemabench" / f"{subset}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in rows:
        if isinstance(r["schema"], str):
            r["schema"] = json.loads(r["schema"])
    return rows


def plain_converts(schema: Any) -> bool:
    try:
        guarded_build_regex(json.dumps(schema), "")
        return True
    except (UnsupportedSchema, ValueError):
        return False


def compact(x: Any) -> str:
    return json.dumps(x, separators=(",", ":"), ensure_ascii=False)


MAX_CHECK_REGEX = 300_000  # Python's `re` takes minutes on multi-megabyte regexes


def instance_agreement(regex: str, tests: list[dict]) -> tuple[int, int, int]:
    """(agree, total, accepted_but_invalid) for labelled instances at the regex level
    (skipped, i.e. (0, 0, 0), for regexes too large for Python's `re`)."""
    if len(regex) > MAX_CHECK_REGEX or not tests:
        return 0, 0, 0
    try:
        pat = re.compile(regex)
    except re.error:
        return 0, 0, 0
    agree = bad = 0
    for t in tests:
        acc = pat.fullmatch(compact(t["data"])) is not None
        agree += acc == bool(t["valid"])
        bad += acc and not t["valid"]
    return agree, len(tests), bad


def coverage_report(data_dir: str | Path, subsets: tuple[str, ...] = SUBSETS, limit: int | None = None,
                    with_plain: bool = True, on_row: Any = None) -> list[dict]:
    out = []
    for subset in subsets:
        rows = load_subset(data_dir, subset)[:limit]
        t0 = time.perf_counter()
        ours = plain = agree = total = bad = 0
        reasons: dict[str, int] = {}
        for r in rows:
            if with_plain:
                plain += plain_converts(r["schema"])
            try:
                regex = schema_to_regex(r["schema"])
            except (UnsupportedSchema, RecursionError, ValueError) as e:
                m = re.search(r"keyword '([^']+)'", str(e))
                key = m.group(1) if m else str(e)[:40]
                reasons[key] = reasons.get(key, 0) + 1
                continue
            ours += 1
            a, n, b = instance_agreement(regex, r.get("tests") or [])
            agree, total, bad = agree + a, total + n, bad + b
        n = len(rows)
        out.append({
            "subset": subset, "count": n,
            "ours_compiled": ours, "ours_share": round(ours / n, 3) if n else 0.0,
            "plain_outlines_compiled": plain if with_plain else None,
            "plain_outlines_share": round(plain / n, 3) if n and with_plain else None,
            "test_instances": total, "test_agreement": round(agree / total, 3) if total else None,
            "accepted_but_invalid": bad,
            "top_rejections": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:8]),
            "seconds": round(time.perf_counter() - t0, 2),
        })
        if on_row is not None:
            on_row(out[-1])
    return out


if __name__ == "__main__":  # python -m arborlm.constrain.coverage DATA_DIR (e.g. arborlm.runtime.data.DATA_DIR)
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m arborlm.constrain.coverage DATA_DIR  (the folder holding jsonschemabench/; "
                 "`arborlm bench json --parts coverage` runs it on the shipped data)")
    coverage_report(sys.argv[1], on_row=lambda row: print(json.dumps(row), flush=True))
