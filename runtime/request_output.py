"""What a request reports: per-step metadata (streamed logprobs) and the final `meta` dict."""

from __future__ import annotations

from typing import Any

from arborlm.runtime.types import Req


def step_meta(req: Req, num_new: int) -> dict[str, Any]:
    if not req.params.return_logprob or num_new == 0:
        return {}
    return {
        "logprobs": req.output_logprobs[-num_new:],
        "top_logprobs": req.output_top_logprobs[-num_new:],
    }


def finished_meta(req: Req) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "prompt_tokens": len(req.input_ids),
        "cached_tokens": req.cached_tokens,
        "completion_tokens": len(req.output_ids),
        "finish_reason": req.finish_reason.to_dict() if req.finish_reason else None,
        "jump_forward_tokens": req.jump_forward_tokens,
        "jump_forward_proposed": req.jump_forward_proposed,
        "grammar_compile_ms": req.grammar_compile_ms,
        "num_forward_passes": req.num_forward_passes,
        "num_retractions": req.num_retractions,
        "e2e_latency": (req.finish_time or 0.0) - req.arrival_time,
    }
    if req.first_token_time is not None:
        meta["ttft"] = req.first_token_time - req.arrival_time
    if req.params.return_logprob:
        meta["output_logprobs"] = list(req.output_logprobs)
        meta["output_top_logprobs"] = list(req.output_top_logprobs)
    if req.params.logprob_start_len >= 0:
        meta["prompt_logprobs"] = list(req.prompt_logprobs)
        meta["prompt_top_logprobs"] = list(req.prompt_top_logprobs)
    return meta
