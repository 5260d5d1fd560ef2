"""`arborlm bench json`: constrained decoding on the default model, one JSON line per result.

  mask-overhead   decode tokens/s with a JSON-schema constraint ÷ unconstrained, batch 16
  jump-forward    forward passes and wall time with vs without jump-forward (character cards)
  compile         grammar compile time p50/p90/p99/max over all jsonschemabench schemas, cold and cached,
                  per subset and overall (compile_time.py: forked compiles, per-schema cap, censored),
                  for each engine of --grammar-backends; with `coverage` / `mask` in --parts the same
                  child also checks label agreement and the batch-16 mask time (grammar_checks.py);
                  --table FILE writes the markdown table (json_table.py)
  cards           issue 12's character cards (CHARACTER_CARD_SCHEMA, 50 names, greedy, 160 tokens):
                  valid with finish_reason stop, per engine
  outlines-peer   (not default) the character cards with outlines + transformers vs arborlm (json_peers.py)
  --coverage      per subset: share of schemas we compile vs plain outlines-core, labelled-instance
                  agreement (the full run over every file; minutes)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from arborlm.runtime.bench.provenance import emit
from arborlm.runtime.data import DATA_DIR as DATA

CHARACTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "house": {"enum": ["Gryffindor", "Slytherin", "Ravenclaw", "Hufflepuff"]},
        "blood status": {"enum": ["Pure-blood", "Half-blood", "Muggle-born"]},
        "occupation": {"enum": ["student", "teacher", "auror", "ministry of magic", "death eater",
                                "order of the phoenix"]},
        "wand": {
            "type": "object",
            "properties": {
                "wood": {"type": "string", "maxLength": 30},
                "core": {"type": "string", "maxLength": 30},
                "length": {"type": "number", "minimum": 5, "maximum": 20},
            },
            "required": ["wood", "core", "length"],
        },
        "alive": {"enum": ["Alive", "Deceased"]},
        "patronus": {"type": "string", "maxLength": 30},
    },
    "required": ["name", "house", "blood status", "occupation", "wand", "alive", "patronus"],
}


# Issue 12's character-card workload: like CHARACTER_SCHEMA, but the wand length is a plain
# `number` (no bounds): without the default digit bound the small model emitted zeros until the
# token limit in 22 of 50 cards.
CHARACTER_CARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "house": {"enum": ["Gryffindor", "Slytherin", "Ravenclaw", "Hufflepuff"]},
        "blood_status": {"enum": ["Pure-blood", "Half-blood", "Muggle-born", "Unknown"]},
        "occupation": {"type": "string", "maxLength": 40},
        "wand": {"type": "object", "properties": {"wood": {"type": "string", "maxLength": 20},
                                                  "core": {"type": "string", "maxLength": 20},
                                                  "length": {"type": "number"}},
                 "required": ["wood", "core", "length"], "additionalProperties": False},
        "alive": {"type": "boolean"},
        "patronus": {"type": "string", "maxLength": 20},
    },
    "required": ["name", "house", "blood_status", "occupation", "wand", "alive", "patronus"],
    "additionalProperties": False,
}
CARD_MAX_NEW_TOKENS = 160


def bench_character_cards(engine: Any, num: int, json_number_digits: int | None = None) -> dict[str, Any]:
    """Issue 12's workload: greedy, max_new_tokens 160, chat template, one batch; how many cards
    are valid JSON for CHARACTER_CARD_SCHEMA with finish_reason stop."""
    import jsonschema

    prompts = character_prompts(engine.tokenizer, num)
    params: dict[str, Any] = {"temperature": 0, "max_new_tokens": CARD_MAX_NEW_TOKENS,
                              "json_schema": CHARACTER_CARD_SCHEMA}
    if json_number_digits is not None:
        params["json_number_digits"] = json_number_digits
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)

    def is_card(text: str) -> bool:
        try:
            jsonschema.validate(json.loads(text), CHARACTER_CARD_SCHEMA)
        except (ValueError, jsonschema.ValidationError):
            return False
        return True

    valid = sum(o["meta"]["finish_reason"]["type"] == "stop" and is_card(o["text"]) for o in outs)
    return {"bench": "json", "result": "character-cards", "grammar_backend": engine.config.grammar_backend,
            "json_number_digits": engine.config.json_number_digits if json_number_digits is None else json_number_digits,
            "num_prompts": len(prompts), "valid_stop": valid,
            "finish_length": sum(o["meta"]["finish_reason"]["type"] == "length" for o in outs),
            "wall_s": round(time.perf_counter() - t0, 1)}


def character_prompts(tokenizer: Any, limit: int) -> list[str]:
    names = [n.strip() for n in (DATA / "workloads" / "names_50.txt").read_text().splitlines() if n.strip()]
    return [tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Give the character card of {n} from Harry Potter as JSON."}],
        tokenize=False, add_generation_prompt=True) for n in names[:limit]]


def _decode_step_ms(engine: Any, prompts: list[str], params: dict[str, Any], num_steps: int) -> float:
    """Median wall time of steady-state decode steps (grammar compiled, prefill done, all rows
    decoding): what "decode tokens/s" means, free of prefill and compile time."""
    from arborlm.runtime.types import Req, SamplingParams

    sched = engine.scheduler
    rids = [f"mask-bench-{i}" for i in range(len(prompts))]
    for rid, p in zip(rids, prompts):
        sched.add_request(Req(rid, engine.tokenizer.encode(p, add_special_tokens=False), SamplingParams(**params)))
    while sched.grammar_waiting or sched.waiting or any(r.num_pending > 1 for r in sched.running):
        time.sleep(0.01)
        sched.step()
    for _ in range(4):
        sched.step()
    times = []
    for _ in range(num_steps):
        t0 = time.perf_counter()
        sched.step()
        times.append(time.perf_counter() - t0)
    assert len(sched.running) == len(prompts), "a request finished early: raise max_new_tokens"
    for rid in rids:
        sched.abort_request(rid)
    sched.step()
    engine.flush_cache()
    return statistics.median(times) * 1000


def bench_mask_overhead(engine: Any, batch: int = 16, num_steps: int = 30) -> dict[str, Any]:
    tok = engine.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"Write a JSON note number {i}."}],
                                       tokenize=False, add_generation_prompt=True) for i in range(batch)]
    # A schema whose outputs run long, so every row keeps decoding through the measured steps.
    schema = {"type": "object", "properties": {"note": {"type": "string", "minLength": 400}}, "required": ["note"]}
    constrained = {"temperature": 0.0, "max_new_tokens": 200, "json_schema": schema, "jump_forward": False}
    plain = {"temperature": 0.0, "max_new_tokens": 200, "ignore_eos": True}
    ms_c, ms_u = [], []
    for _ in range(7):  # interleaved, medians: timings on these machines swing
        ms_u.append(_decode_step_ms(engine, prompts, plain, num_steps))
        ms_c.append(_decode_step_ms(engine, prompts, constrained, num_steps))
    c, u = batch * 1000 / statistics.median(ms_c), batch * 1000 / statistics.median(ms_u)
    return {"bench": "json", "result": "mask-overhead", "batch": batch, "constrained_tok_s": round(c, 1),
            "unconstrained_tok_s": round(u, 1), "ratio": round(c / u, 3), "overhead": round(1 - c / u, 3),
            "step_ms_constrained": [round(x, 1) for x in ms_c], "step_ms_unconstrained": [round(x, 1) for x in ms_u]}


def bench_jump_forward(engine: Any, num: int) -> dict[str, Any]:
    prompts = character_prompts(engine.tokenizer, num)
    res: dict[str, Any] = {"bench": "json", "result": "jump-forward", "num_prompts": len(prompts)}
    outs = {}
    for on in (False, True):
        engine.flush_cache()
        before = engine.stats()["num_forward_passes"]
        t0 = time.perf_counter()
        outs[on] = engine.generate(prompts, {"temperature": 0, "max_new_tokens": 256, "json_schema": CHARACTER_SCHEMA,
                                             "jump_forward": on})
        key = "on" if on else "off"
        res[f"wall_s_{key}"] = round(time.perf_counter() - t0, 2)
        res[f"forward_passes_{key}"] = engine.stats()["num_forward_passes"] - before
        res[f"req_forward_passes_{key}"] = sum(o["meta"]["num_forward_passes"] for o in outs[on])
        res[f"completion_tokens_{key}"] = sum(o["meta"]["completion_tokens"] for o in outs[on])
        # passes per output token: comparable even where jump-forward changed the text
        res[f"passes_per_token_{key}"] = round(res[f"req_forward_passes_{key}"] / res[f"completion_tokens_{key}"], 3)
    res["jump_forward_tokens"] = sum(o["meta"]["jump_forward_tokens"] for o in outs[True])
    res["draft_tokens_proposed"] = sum(o["meta"]["jump_forward_proposed"] for o in outs[True])
    res["draft_acceptance"] = round(res["jump_forward_tokens"] / max(1, res["draft_tokens_proposed"]), 3)
    res["req_forward_pass_saving"] = round(1 - res["req_forward_passes_on"] / res["req_forward_passes_off"], 3)
    res["per_token_pass_saving"] = round(1 - res["passes_per_token_on"] / res["passes_per_token_off"], 3)
    res["dtype"] = engine.config.dtype
    res["wall_speedup"] = round(res["wall_s_off"] / res["wall_s_on"], 2)
    res["greedy_identical"] = round(sum(a["output_ids"] == b["output_ids"]
                                        for a, b in zip(outs[False], outs[True])) / len(prompts), 3)
    res["all_valid_json"] = all(_valid(o["text"]) for o in outs[True] if o["meta"]["finish_reason"]["type"] == "stop")
    return res


def _valid(text: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), CHARACTER_SCHEMA)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def run(args: argparse.Namespace) -> int:
    from arborlm.runtime import Engine

    if args.coverage:
        from arborlm.constrain.coverage import coverage_report

        for row in coverage_report(DATA):
            emit({"bench": "json", "result": "coverage", **row})
        if args.generate:
            from arborlm.runtime.bench.schema_generation import generate_and_validate

            engine = Engine(model=args.model, dtype=args.dtype, max_total_tokens=32768)
            for row in generate_and_validate(engine, DATA):
                emit({"bench": "json", "result": "generate-validate", **row})
        return 0
    if args.rows:  # the table from rows printed by earlier runs (e.g. one run per engine)
        from arborlm.runtime.bench.json_table import markdown_table

        rows = [json.loads(line) for path in args.rows for line in open(path) if line.startswith("{")]
        cap_s = max((r.get("cap_s", 0.0) for r in rows if r.get("result") == "compile"), default=0.0)
        with open(args.table or "/dev/stdout", "w") as fh:
            fh.write(markdown_table(rows, cap_s))
        return 0
    parts = args.parts.split(",")
    backends = args.grammar_backends.split(",")
    schema_parts = [p for p in parts if p in ("compile", "coverage", "mask")]
    if schema_parts:
        from arborlm.runtime.bench.compile_time import compile_time_report

        checks = tuple(p for p in schema_parts if p != "compile")
        rows = []
        for backend in backends:
            for row in compile_time_report(args.model, DATA, cap_s=args.compile_cap_s, backend=backend, checks=checks,
                                           limit_per_subset=args.compile_limit or None):
                rows.append(row)
                emit(row)
        if args.table:
            from arborlm.runtime.bench.json_table import markdown_table

            with open(args.table, "w") as fh:
                fh.write(markdown_table(rows, args.compile_cap_s))
        if not set(parts) - set(schema_parts):
            return 0
    if "cards" in parts:
        for backend in backends:
            engine = Engine(model=args.model, dtype=args.dtype, max_total_tokens=32768, grammar_backend=backend)
            emit(bench_character_cards(engine, args.num_names))
            engine.shutdown()
        if not set(parts) - {"cards", *schema_parts}:
            return 0
    engine = Engine(model=args.model, dtype=args.dtype, max_total_tokens=32768)
    if "mask-overhead" in parts:
        emit(bench_mask_overhead(engine))
    if "jump-forward" in parts:
        emit(bench_jump_forward(engine, args.num_names))
    if "outlines-peer" in parts:
        from arborlm.runtime.bench.json_peers import bench_outlines_peer

        emit(bench_outlines_peer(engine, args.peer_num_names))
    engine.shutdown()
    return 0


def add_json_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("json", help="constrained decoding: mask overhead, jump-forward, compile time, coverage")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--parts", default="compile,mask-overhead,jump-forward",
                   help="comma-separated: compile, mask-overhead, jump-forward, and (not default: slow) coverage, "
                        "mask (label agreement / batch-16 mask time, in the compile child), cards (issue 12's "
                        "character cards), "
                        "outlines-peer = the character cards with outlines + transformers on the same model, "
                        "next to arborlm (skipped with a JSON line when outlines is not installed)")
    p.add_argument("--peer-num-names", type=int, default=50, help="outlines-peer: character-card prompts")
    p.add_argument("--num-names", type=int, default=50)
    p.add_argument("--grammar-backends", default="outlines,llguidance",
                   help="compile / coverage / mask / cards: the grammar engines to run, comma-separated")
    p.add_argument("--rows", action="append", default=[],
                   help="with --table: render the table from the JSON lines of earlier compile runs in this file "
                        "(repeatable; e.g. one run per engine) instead of running anything")
    p.add_argument("--table", default=None,
                   help="compile / coverage / mask: write the markdown table (per subset and engine) to this file")
    p.add_argument("--compile-limit", type=int, default=0,
                   help="compile: schemas per jsonschemabench subset (0: all 100 of each subset)")
    p.add_argument("--compile-cap-s", type=float, default=20.0,
                   help="compile: per-schema cold-compile cap in seconds; index builds of free-form objects and "
                        "large schemas take 10 s to minutes, so a compile still running at the cap is killed and "
                        "counted as censored there (a full run at 20 s: ~30 min on one busy core)")
    p.add_argument("--coverage", action="store_true", help="the full schema coverage report instead")
    p.add_argument("--generate", action="store_true",
                   help="with --coverage: generate an instance for every compiled schema and validate it")
    p.set_defaults(func=run)
