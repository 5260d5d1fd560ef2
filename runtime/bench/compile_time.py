"""Grammar compile time over every JSONSchemaBench schema, cold and cached (`arborlm bench json
--parts compile`).

Each schema is compiled cold in a child forked from a warm worker subprocess (tokenizer and token
vocabulary already built; one schema at a time, one CPU thread) with a fresh `GrammarCompiler`, then
compiled a second time through the same compiler's LRU cache ("cached"). A compile still running
at the per-schema wall-clock cap is killed and counts as *censored at the cap*: its cold time is
known only to be >= cap. Percentiles are taken over compiled + censored schemas, the censored ones
ranked last at the cap; a percentile whose rank lands among them is reported as the cap and flagged
`_lower_bound`. Schemas we reject with an error (naming the unsupported keyword) are counted as
failures, apart from the timings. A compile child that dies (e.g. outlines-core aborting on a failed
allocation under the memory cap) is counted as `crashed`, also apart.

Regex build (schema -> regex) and index build (regex -> outlines-core token Index) are timed
separately inside the cold compile.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY_TIMEOUT_S = 300.0


@dataclass
class Sample:
    subset: str
    index: int
    status: str  # "ok" | "failed" | "capped" | "crashed"
    cold_ms: float = math.nan
    cached_ms: float = math.nan
    source_ms: float = math.nan  # building the grammar text: regex, or Lark rules (llguidance JSON)
    engine_ms: float = math.nan  # the engine's compile of that text (outlines index / llguidance)
    source_chars: int = 0
    reason: str = ""
    backend: str = "outlines"
    mask_ms: list[float] = field(default_factory=list)  # batch-16 mask fill per decode step
    agreement: dict[str, int] = field(default_factory=dict)  # grammar_checks.label_agreement


def censored_pct(values: list[float], n_censored: int, cap: float, q: float) -> tuple[float, bool]:
    """The q-quantile (rank rule of json_bench.pct: sorted[min(n-1, int(q*n))]) of `values` plus
    `n_censored` observations known only to be >= `cap`. Returns (value, is_lower_bound): when the
    rank lands on a censored observation the quantile is only known to be >= cap."""
    ranked = sorted([(v, False) for v in values] + [(cap, True)] * n_censored)
    if not ranked:
        return math.nan, False
    v, censored = ranked[min(len(ranked) - 1, int(q * len(ranked)))]
    return v, censored


def rejection_key(message: str) -> str:
    """The JSON Schema keyword a rejection names ("... keyword 'x' ..."), else a short message head."""
    m = re.search(r"keyword '([^']+)'", message)
    return m.group(1) if m else message[:60]


def load_schemas(data_dir: Path, limit_per_subset: int | None = None,
                 with_tests: bool = False) -> list[tuple[str, int, Any]]:
    """(subset, index, schema), or with_tests: (subset, index, (schema, labelled instances))."""
    out = []
    for f in sorted((Path(data_dir) / "jsonschemabench").glob("*.jsonl")):
        with open(f) as fh:
            lines = [line for line in fh if line.strip()]
        for i, line in enumerate(lines[:limit_per_subset]):
            row = json.loads(line)
            s = json.loads(row["schema"]) if isinstance(row["schema"], str) else row["schema"]
            out.append((f.stem, i, (s, row.get("tests", [])) if with_tests else s))
    return out


# ---------------------------------------------------------------------------------------- worker
def _die_with_parent() -> None:
    """Linux: get SIGKILLed when the parent process dies (a killed bench leaves no compiles running)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the parent's explicit kill on exit is the only cleanup


def _compile_one(tok: Any, schema: Any, backend: str = "outlines", checks: tuple[str, ...] = (),
                 tests: list[dict] | None = None) -> dict[str, Any]:
    """Cold compile with a fresh GrammarCompiler (vocabulary already built), then the cached one;
    then the `checks` ("coverage": label agreement, "mask": batch-16 mask time) on the grammar."""
    from arborlm.constrain import GrammarCompiler
    from arborlm.constrain.compiler import GrammarError
    from arborlm.runtime.bench.grammar_checks import label_agreement, mask_step_ms

    compiler = GrammarCompiler(tok, num_threads=1, backend=backend)
    source_ms: list[float] = []
    source_chars: list[int] = []
    grammar_source = compiler.grammar_source

    def timed_source(kind: str, spec: Any, number_digits: int | None = None) -> tuple[str, str]:
        t = time.perf_counter()
        try:
            out = grammar_source(kind, spec, number_digits)
            source_chars.append(len(out[1]))
            return out
        finally:
            source_ms.append((time.perf_counter() - t) * 1000)

    compiler.grammar_source = timed_source  # type: ignore[method-assign]
    t0 = time.perf_counter()
    try:
        g = compiler.compile_sync("json_schema", schema)
        cold = (time.perf_counter() - t0) * 1000
        t1 = time.perf_counter()
        compiler.compile_sync("json_schema", schema)
        cached = (time.perf_counter() - t1) * 1000
        out = {"status": "ok", "cold_ms": cold, "cached_ms": cached, "source_ms": source_ms[0],
               "engine_ms": g.compile_ms - source_ms[0], "source_chars": source_chars[0]}
        if "coverage" in checks:
            out["agreement"] = label_agreement(g, tok, tests or [])
        if "mask" in checks:
            out["mask_ms"] = mask_step_ms(g, tok, tests or [])
        return out
    except (GrammarError, RecursionError) as e:
        return {"status": "failed", "reason": str(e)[:300]}
    except Exception as e:  # noqa: BLE001 - report it as a failure, keep going
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:300]}
    finally:
        compiler.shutdown()


def _run_child(tok: Any, job: tuple, cap_s: float, mem_extra_bytes: int) -> dict[str, Any]:
    """Fork a child that compiles `schema`; kill it at `cap_s`. Called in the worker process.
    The memory cap is a soft limit only: the schema guard's own forked child lowers it further."""
    from arborlm.constrain.schema_guard import run_in_child

    try:
        data, status = run_in_child(lambda: json.dumps(_compile_one(tok, *job)).encode(), mem_extra_bytes,
                                    hard=False, timeout_s=cap_s, setup=_die_with_parent)
    except TimeoutError:
        return {"status": "capped"}
    if status != 0 or not data:
        return {"status": "crashed", "reason": f"compile child died (wait status {status})"}
    return json.loads(data)


def _worker(conn: Any, model: str, mem_extra_bytes: int) -> None:
    """Subprocess: load the tokenizer and build the token vocabulary once, then, per schema sent
    over `conn` as (schema, cap_s), fork a child that compiles it (so a capped or crashed compile
    costs no restart and every compile starts from the same warm state)."""
    _die_with_parent()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from arborlm.constrain import get_token_vocab
    from arborlm.runtime.model_loader import load_tokenizer

    tok = load_tokenizer(model)
    t0 = time.perf_counter()
    get_token_vocab(tok)
    from arborlm.constrain.llguidance_backend import get_ll_tokenizer

    get_ll_tokenizer(tok, tok.eos_token_id)  # built before the fork, like the outlines vocabulary
    conn.send(("ready", (time.perf_counter() - t0) * 1000))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        conn.send(("done", _run_child(tok, msg[0], msg[1], mem_extra_bytes)))


class _WorkerHandle:
    def __init__(self, model: str, mem_extra_bytes: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, model, mem_extra_bytes), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(READY_TIMEOUT_S):
            self.kill()
            raise RuntimeError("compile worker did not start")
        _, self.vocab_ms = self.conn.recv()

    def compile(self, job: tuple, cap_s: float) -> dict[str, Any] | None:
        """The compile child's result for job = (schema, backend, checks, tests); None when the
        worker itself stopped answering. Raises EOFError when the worker died."""
        self.conn.send((job, cap_s))
        if not self.conn.poll(cap_s + 60):
            return None
        return self.conn.recv()[1]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(10)
        self.conn.close()

    def close(self) -> None:
        try:
            self.conn.send(None)  # ask the worker to exit
        except OSError:
            self.kill()  # its pipe is already gone: it is dead or stuck
            return
        self.proc.join(10)
        if self.proc.is_alive():
            self.kill()


def run_samples(schemas: list[tuple[str, int, Any]], model: str, cap_s: float, mem_gib: float = 8.0,
                progress: bool = True, backend: str = "outlines", checks: tuple[str, ...] = ()) -> Iterator[Sample]:
    """schemas: (subset, index, schema) or, with checks, (subset, index, (schema, tests))."""
    mem = int(mem_gib * (1 << 30))
    worker = _WorkerHandle(model, mem)
    t_start = time.perf_counter()
    try:
        for n, (subset, i, schema) in enumerate(schemas):
            try:
                schema_only, tests = schema if checks else (schema, [])
                res = worker.compile((schema_only, backend, checks, tests), cap_s)
            except (EOFError, OSError):
                res = {"status": "crashed", "reason": f"worker died (exit {worker.proc.exitcode})"}
            if res is None or res["status"] == "crashed" and not worker.proc.is_alive():
                worker.kill()
                worker = _WorkerHandle(model, mem)
                res = res or {"status": "capped"}
            yield Sample(subset, i, backend=backend, **res)
            if progress and res["status"] in ("capped", "crashed"):
                print(f"[compile] {subset}#{i}: {res['status']}", file=sys.stderr, flush=True)
            if progress and (n + 1) % 50 == 0:
                print(f"[compile] {n + 1}/{len(schemas)} schemas, {time.perf_counter() - t_start:.0f} s",
                      file=sys.stderr, flush=True)
    finally:
        worker.close()


# ---------------------------------------------------------------------------------------- report
def _r(x: float, nd: int) -> float | None:
    return None if math.isnan(x) else round(x, nd)


def summarize(samples: list[Sample], subset: str, cap_s: float) -> dict[str, Any]:
    ok = [s for s in samples if s.status == "ok"]
    capped = sum(s.status == "capped" for s in samples)
    failed = [s for s in samples if s.status == "failed"]
    crashed = sum(s.status == "crashed" for s in samples)
    reasons: dict[str, int] = {}
    for s in failed:
        k = rejection_key(s.reason)
        reasons[k] = reasons.get(k, 0) + 1
    cap_ms = cap_s * 1000
    cold = [s.cold_ms for s in ok]
    timed = len(ok) + capped
    row: dict[str, Any] = {
        "bench": "json", "result": "compile", "grammar_backend": samples[0].backend if samples else None,
        "subset": subset, "num_schemas": len(samples),
        "compiled": len(ok), "failed": len(failed), "capped": capped, "crashed": crashed,
        "cap_s": cap_s, "censored_share": round(capped / timed, 3) if timed else 0.0,
    }
    for q in (0.5, 0.9, 0.95, 0.99, 1.0):
        v, lower = censored_pct(cold, capped, cap_ms, q)
        name = "max" if q == 1.0 else f"p{int(q * 100)}"
        row[f"cold_ms_{name}"] = _r(v, 2)
        row[f"cold_ms_{name}_lower_bound"] = lower
    for name, nd in (("cached", 4), ("source", 2), ("engine", 2)):
        xs = [getattr(s, f"{name}_ms") for s in ok]
        for q in (0.5, 0.95):
            row[f"{name}_ms_p{int(q * 100)}"] = _r(censored_pct(xs, 0, 0.0, q)[0], nd)
    tot = sum(cold)
    row["source_share_of_cold"] = round(sum(s.source_ms for s in ok) / tot, 3) if tot else None
    row["cold_ms_max_compiled"] = _r(max(cold), 1) if cold else None
    masks = sorted(x for s in ok for x in s.mask_ms)
    if masks:
        row["mask_batch16_ms_p50"] = _r(censored_pct(masks, 0, 0.0, 0.5)[0], 3)
        row["mask_batch16_ms_p99"] = _r(censored_pct(masks, 0, 0.0, 0.99)[0], 3)
    checked = [s.agreement for s in ok if s.agreement]
    if checked:
        for k in ("labelled", "agree", "accepted_invalid", "rejected_valid"):
            row[f"label_{k}"] = sum(a[k] for a in checked)
        row["label_agreement"] = round(row["label_agree"] / row["label_labelled"], 3) if row["label_labelled"] else None
    row["load_avg_1m"] = round(os.getloadavg()[0], 1)  # when the subset finished (shared machines)
    row["top_failures"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:8])
    if crashed:
        row["crash_reasons"] = sorted({s.reason for s in samples if s.status == "crashed"})[:3]
    row["note"] = (f"cold/cached over compiled + capped schemas; {capped} capped at {cap_s:g} s counted as "
                   f"censored at the cap (cold percentiles flagged _lower_bound are >= the value); "
                   "failed (rejected, see top_failures) and crashed schemas are excluded from timings; "
                   "cached/regex/index percentiles over compiled schemas only")
    return row


def compile_time_report(model: str, data_dir: Path, cap_s: float = 20.0, limit_per_subset: int | None = None,
                        mem_gib: float = 8.0, backend: str = "outlines",
                        checks: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """One row per subset as it finishes, then an "ALL" row (one grammar engine)."""
    schemas = load_schemas(data_dir, limit_per_subset, with_tests=bool(checks))
    t0 = time.perf_counter()
    by_subset: dict[str, list[Sample]] = {}
    current: str | None = None
    for s in run_samples(schemas, model, cap_s, mem_gib, backend=backend, checks=checks):
        if current is not None and s.subset != current:
            yield summarize(by_subset[current], current, cap_s)
        current = s.subset
        by_subset.setdefault(s.subset, []).append(s)
    if current is not None:
        yield summarize(by_subset[current], current, cap_s)
    everything = [s for v in by_subset.values() for s in v]
    row = summarize(everything, "ALL", cap_s)
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    yield row
