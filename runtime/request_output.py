"""What a request reports: this step's logprobs, and its `Usage` when it finishes."""

from __future__ import annotations

from arborlm.runtime.types import Req, Usage


def step_logprobs(req: Req, num_new: int) -> tuple[list[float | None], list[list[tuple[int, float]]]]:
    """The logprobs of the request's last `num_new` output tokens (empty unless it asked)."""
    if not req.params.return_logprob or num_new == 0:
        return [], []
    return req.output_logprobs[-num_new:], req.output_top_logprobs[-num_new:]


def usage_of(req: Req) -> Usage:
    with_prompt_lps = req.params.logprob_start_len >= 0
    return Usage(
        prompt_tokens=len(req.input_ids),
        cached_tokens=req.cached_tokens,
        completion_tokens=len(req.output_ids),
        jump_forward_tokens=req.jump_forward_tokens,
        jump_forward_proposed=req.jump_forward_proposed,
        grammar_compile_ms=req.grammar_compile_ms,
        num_forward_passes=req.num_forward_passes,
        num_retractions=req.num_retractions,
        e2e_latency=(req.finish_time or 0.0) - req.arrival_time,
        ttft=None if req.first_token_time is None else req.first_token_time - req.arrival_time,
        prompt_logprobs=list(req.prompt_logprobs) if with_prompt_lps else None,
        prompt_top_logprobs=list(req.prompt_top_logprobs) if with_prompt_lps else None,
    )
