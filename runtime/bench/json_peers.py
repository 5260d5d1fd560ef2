"""`arborlm bench json --parts outlines-peer`: the character-card JSON generation (CHARACTER_SCHEMA,
Harry Potter names, greedy, max 256 new tokens) with `outlines` + transformers on the same model
weights and dtype, next to arborlm on the same prompts in the same run.

outlines is optional (not an arborlm dependency): when `import outlines` fails, one JSON line says
the peer was skipped and why. Grammar compilation is kept out of both wall times: arborlm's grammar
is compiled by a 1-token warm-up request first, outlines' in `outlines.Generator(...)`; both are
reported apart. outlines runs the prompts as one left-padded `model.generate` batch (its `batch`
API); output tokens are counted up to and including each row's first EOS, as arborlm counts them.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from typing import Any

from arborlm.runtime.bench.json_bench import CHARACTER_SCHEMA, DATA, character_prompts

MAX_NEW_TOKENS = 256


def _names(limit: int) -> list[str]:
    names = [n.strip() for n in (DATA / "workloads" / "names_50.txt").read_text().splitlines() if n.strip()]
    return names[:limit]


def _user_message(name: str) -> str:  # the same text character_prompts wraps in the chat template
    return f"Give the character card of {name} from Harry Potter as JSON."


def _count_until_eos(row: list[int], eos_ids: set[int]) -> int:
    for i, t in enumerate(row):
        if t in eos_ids:
            return i + 1
    return len(row)


def why_invalid(text: str) -> str | None:
    """None for a valid character card, else a short reason (JSON error or schema violation)."""
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), CHARACTER_SCHEMA)
        return None
    except ValueError as e:
        return f"not JSON: {e}"[:120]
    except jsonschema.ValidationError as e:
        return f"schema: {e.message}"[:120]


def run_arborlm(engine: Any, prompts: list[str]) -> dict[str, Any]:
    params = {"temperature": 0, "max_new_tokens": MAX_NEW_TOKENS, "json_schema": CHARACTER_SCHEMA}
    t0 = time.perf_counter()
    engine.generate(prompts[:1], {**params, "max_new_tokens": 1})  # compiles (and caches) the grammar
    warm = time.perf_counter() - t0
    engine.flush_cache()
    t0 = time.perf_counter()
    outs = engine.generate(prompts, params)
    wall = time.perf_counter() - t0
    toks = sum(o["meta"]["completion_tokens"] for o in outs)
    return {"wall_s": wall, "tokens": toks, "texts": [o["text"] for o in outs], "warmup_compile_s": warm,
            "jump_forward": engine.config.jump_forward}


def run_outlines(model_path: str, dtype_name: str, names: list[str], batch_size: int) -> dict[str, Any]:
    import outlines
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    hf_tok = AutoTokenizer.from_pretrained(model_path)
    hf_model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).eval()
    model = outlines.from_transformers(hf_model, hf_tok)
    t0 = time.perf_counter()
    generator = outlines.Generator(model, outlines.json_schema(json.dumps(CHARACTER_SCHEMA)))
    compile_s = time.perf_counter() - t0

    captured: list[torch.Tensor] = []
    hf_generate = hf_model.generate

    def generate_capturing(*args: Any, **kwargs: Any) -> Any:  # keep the token ids outlines decodes
        out = hf_generate(*args, **kwargs)
        captured.append(out[:, kwargs["input_ids"].shape[1]:])
        return out

    hf_model.generate = generate_capturing  # type: ignore[method-assign]
    eos = hf_model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    messages = [_user_message(n) for n in names]
    texts: list[str] = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(messages), batch_size):
            chunk = messages[i:i + batch_size]
            res = generator.batch(chunk, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
            texts += [res] if isinstance(res, str) else list(res)
    wall = time.perf_counter() - t0
    toks = sum(_count_until_eos(row.tolist(), eos_ids) for out in captured for row in out)
    formatted = model.type_adapter.format_input(messages[0])
    return {"wall_s": wall, "tokens": toks, "texts": texts, "compile_s": compile_s,
            "formatted_prompt": formatted, "version": importlib.metadata.version("outlines")}


def _first_invalid(texts: list[str]) -> dict[str, str] | None:
    for t in texts:
        why = why_invalid(t)
        if why is not None:
            return {"why": why, "text_tail": t[-80:]}
    return None


def bench_outlines_peer(engine: Any, num: int, batch_size: int = 0) -> dict[str, Any]:
    """One result row: arborlm vs outlines+transformers on the same `num` character-card prompts."""
    row: dict[str, Any] = {"bench": "json", "result": "outlines-peer"}
    try:
        import outlines  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means: no peer
        return {**row, "skipped": True, "reason": f"outlines not importable: {type(e).__name__}: {e}"}
    from arborlm.runtime.model_loader import resolve_model_path

    names = _names(num)
    prompts = character_prompts(engine.tokenizer, len(names))
    ours = run_arborlm(engine, prompts)
    peer = run_outlines(resolve_model_path(engine.config.model, engine.config.cache_dir), engine.config.dtype,
                        names, batch_size or len(names))
    ours_tps, peer_tps = ours["tokens"] / ours["wall_s"], peer["tokens"] / peer["wall_s"]
    ours_valid = sum(why_invalid(t) is None for t in ours["texts"]) / len(prompts)
    peer_valid = sum(why_invalid(t) is None for t in peer["texts"]) / len(prompts)
    row.update({
        "num_prompts": len(prompts), "dtype": engine.config.dtype, "max_new_tokens": MAX_NEW_TOKENS,
        "outlines_version": peer["version"], "outlines_batch_size": batch_size or len(names),
        "same_prompt_text": peer["formatted_prompt"] == prompts[0],
        "arborlm_jump_forward": ours["jump_forward"],
        "arborlm_wall_s": round(ours["wall_s"], 2), "outlines_wall_s": round(peer["wall_s"], 2),
        "arborlm_tokens": ours["tokens"], "outlines_tokens": peer["tokens"],
        "arborlm_tok_s": round(ours_tps, 1), "outlines_tok_s": round(peer_tps, 1),
        "tok_s_ratio": round(ours_tps / peer_tps, 2), "wall_speedup": round(peer["wall_s"] / ours["wall_s"], 2),
        "arborlm_valid_share": round(ours_valid, 3), "outlines_valid_share": round(peer_valid, 3),
        "same_text_share": round(sum(a == b for a, b in zip(ours["texts"], peer["texts"])) / len(prompts), 3),
        "arborlm_invalid_example": _first_invalid(ours["texts"]),
        "outlines_invalid_example": _first_invalid(peer["texts"]),
        "arborlm_warmup_compile_s": round(ours["warmup_compile_s"], 2), "outlines_compile_s": round(peer["compile_s"], 2),
        "note": "wall times exclude grammar compilation (reported apart); tokens counted up to and incl. EOS",
    })
    return row
