"""Generate one instance for every JSONSchemaBench schema we compile, and validate it.

The promise of constrained decoding: an output that finishes with finish_reason "stop" parses and
validates with `jsonschema`, for every schema that compiles. `arborlm bench json --coverage
--generate` runs this over every file with the default model (greedy, 256 new tokens); the test
suite runs a fixed sample on the tiny random model (whose outputs explore odd corners).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from arborlm.constrain.coverage import SUBSETS, load_subset

PROMPT_SCHEMA_CHARS = 1500  # schemas can be huge (Kubernetes); the prompt shows the beginning


def instance_prompt(tokenizer: Any, schema: Any) -> str:
    text = json.dumps(schema)[:PROMPT_SCHEMA_CHARS]
    msg = f"Write one JSON instance that is valid against this JSON schema:\n{text}"
    return tokenizer.apply_chat_template([{"role": "user", "content": msg}], tokenize=False,
                                         add_generation_prompt=True)


def generate_and_validate(engine: Any, data_dir: str | Path, subsets: tuple[str, ...] = SUBSETS,
                          limit: int | None = None, max_new_tokens: int = 256, batch: int = 32,
                          params: dict[str, Any] | None = None,
                          max_regex_chars: int | None = None,
                          compile_cap_s: float | None = None) -> list[dict[str, Any]]:
    """Per subset: compiled, generated, finished with stop, valid among those, and the failures.
    `max_regex_chars` skips (and counts) schemas whose regex is larger: building the token index of a
    huge regex takes minutes (fine on the server's compile pool, too slow for a test).
    `compile_cap_s` first compiles each schema in a memory-capped child process (8 GiB,
    bench/compile_time.py) and skips (counts) those still compiling at the cap or dying: the index
    of a few schemas needs more memory than this machine has, which would kill the whole run."""
    import jsonschema

    compiler = engine.scheduler.grammar_compiler
    rows = []
    for subset in subsets:
        schemas = [r["schema"] for r in load_subset(data_dir, subset)][:limit]
        compiled, too_large = [], 0
        over_cap: set[int] = set()
        if compile_cap_s is not None:
            from arborlm.runtime.bench.compile_time import run_samples

            samples = run_samples([(subset, i, s) for i, s in enumerate(schemas)], engine.config.model,
                                  compile_cap_s, backend=engine.config.grammar_backend)
            over_cap = {x.index for x in samples if x.status in ("capped", "crashed")}
        for i, s in enumerate(schemas):
            if i in over_cap:
                too_large += 1
                continue
            try:
                if max_regex_chars is not None and len(compiler.to_regex("json_schema", s)) > max_regex_chars:
                    too_large += 1
                    continue
                compiler.compile_sync("json_schema", s)
                compiled.append(s)
            except ValueError:
                continue
        stats = {"subset": subset, "schemas": len(schemas), "compiled": len(compiled), "skipped_large": too_large,
                 "stop": 0, "length": 0, "valid": 0, "invalid": []}
        for i in range(0, len(compiled), batch):
            part = compiled[i:i + batch]
            outs = engine.generate([instance_prompt(engine.tokenizer, s) for s in part],
                                   [{"json_schema": s, "temperature": 0.0, "max_new_tokens": max_new_tokens,
                                     **(params or {})} for s in part])
            for s, o in zip(part, outs):
                if o["meta"]["finish_reason"]["type"] != "stop":
                    stats["length"] += 1
                    continue
                stats["stop"] += 1
                try:
                    jsonschema.validate(json.loads(o["text"]), s)
                    stats["valid"] += 1
                except (ValueError, jsonschema.ValidationError, jsonschema.SchemaError) as e:
                    stats["invalid"].append({"output": o["text"][:200], "error": str(e)[:200]})
        stats["valid_share_of_stop"] = round(stats["valid"] / max(1, stats["stop"]), 4)
        rows.append(stats)
    return rows
