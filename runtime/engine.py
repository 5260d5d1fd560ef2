"""Offline engine: tokenization + the same `Scheduler.step()` the server runs, in-process.

    engine = Engine(model="smollm2", max_total_tokens=16384)
    out = engine.generate("The capital of France is", {"temperature": 0, "max_new_tokens": 8})
    out["text"], out["output_ids"], out["meta"]
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

from arborlm.runtime.config import EngineConfig
from arborlm.runtime.detokenize import IncrementalDetokenizer, decode_stop_trimmed
from arborlm.runtime.scheduler import Scheduler
from arborlm.runtime.types import Req, SamplingParams, StepOutput

Prompt = str | list[str] | None
OutputLogprobs = tuple[list[float | None], list[list[tuple[int, float]]]]
Params = dict[str, Any] | SamplingParams | list[dict[str, Any] | SamplingParams] | None


def raise_error(out: StepOutput) -> None:
    """A failed request raises: ValueError for the client's fault (400), RuntimeError otherwise."""
    if out.error is not None:
        raise (ValueError if out.error.code == 400 else RuntimeError)(out.error.message)


def result_meta(final: StepOutput, params: SamplingParams, logprobs: OutputLogprobs) -> dict[str, Any]:
    """`generate`'s `meta` dict: the usage, the finish reason, and the logprobs gathered step by step."""
    meta = final.usage.to_dict() if final.usage is not None else {}
    meta["finish_reason"] = final.finish_reason.to_dict() if final.finish_reason else None
    if params.return_logprob:
        meta["output_logprobs"], meta["output_top_logprobs"] = list(logprobs[0]), list(logprobs[1])
    return meta


class Engine:
    def __init__(self, model: str = "smollm2", **options: Any) -> None:
        self.config = EngineConfig.from_kwargs(model=model, **options)
        self.scheduler = Scheduler.from_config(self.config)
        self.config = self.scheduler.config  # dtype resolved
        self.tokenizer = self.scheduler.tokenizer
        self._ids = itertools.count()

    # ------------------------------------------------------------------ requests
    def _make_reqs(self, prompt: Prompt, sampling_params: Params,
                   input_ids: list[int] | list[list[int]] | None) -> tuple[list[Req], bool]:
        if (prompt is None) == (input_ids is None):
            raise ValueError("give exactly one of prompt or input_ids")
        if prompt is not None:
            single = isinstance(prompt, str)
            prompts = [prompt] if single else list(prompt)
            if not all(isinstance(p, str) for p in prompts):
                raise TypeError("prompt must be a string or a list of strings")
            ids_list = [self.tokenizer.encode(p, add_special_tokens=False) for p in prompts]
        else:
            single = bool(input_ids) and isinstance(input_ids[0], int)
            ids_list = [list(input_ids)] if single else [list(x) for x in input_ids]  # type: ignore[arg-type]
        if isinstance(sampling_params, list):
            if len(sampling_params) != len(ids_list):
                raise ValueError(f"{len(sampling_params)} sampling_params for {len(ids_list)} prompts")
            params = [SamplingParams.from_dict(p) for p in sampling_params]
        else:
            params = [SamplingParams.from_dict(sampling_params) for _ in ids_list]
        reqs = [Req(f"engine-{next(self._ids)}-{uuid.uuid4().hex[:6]}", ids, p) for ids, p in zip(ids_list, params)]
        return reqs, single

    def _submit(self, reqs: list[Req]) -> None:
        added: list[Req] = []
        try:
            for r in reqs:
                self.scheduler.add_request(r)
                added.append(r)
        except Exception:
            for r in added:  # all or nothing: a bad prompt in a list loses nothing
                self.scheduler.abort_request(r.rid)
            self.scheduler.step() if added else None
            raise

    def generate(self, prompt: Prompt = None, sampling_params: Params = None, *,
                 input_ids: list[int] | list[list[int]] | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """Run prompts to completion. Returns one dict per prompt (a dict for a single prompt):
        `text` (ends before a matched stop string), `output_ids`, `meta`."""
        reqs, single = self._make_reqs(prompt, sampling_params, input_ids)
        self._submit(reqs)
        finals: dict[str, StepOutput] = {}
        logprobs: dict[str, OutputLogprobs] = {r.rid: ([], []) for r in reqs}
        while len(finals) < len(reqs):
            for out in self.scheduler.step():
                if out.rid not in logprobs or out.rid in finals:
                    continue
                logprobs[out.rid][0].extend(out.logprobs)
                logprobs[out.rid][1].extend(out.top_logprobs)
                if out.finished:
                    finals[out.rid] = out
            if len(finals) < len(reqs) and not self.scheduler.has_work():
                raise RuntimeError(f"scheduler went idle with unfinished requests {sorted(set(logprobs) - set(finals))}")
        results = []
        for r in reqs:
            final = finals[r.rid]
            raise_error(final)
            text = decode_stop_trimmed(self.tokenizer, r.output_ids, r.finish_reason, r.params.skip_special_tokens)
            meta = result_meta(final, r.params, logprobs[r.rid])
            results.append({"text": text, "output_ids": list(r.output_ids), "meta": meta})
        return results[0] if single else results

    def stream(self, prompt: str | None = None, sampling_params: dict[str, Any] | SamplingParams | None = None,
               *, input_ids: list[int] | None = None) -> Iterator[str]:
        """Yield text deltas of one prompt as they are decoded."""
        reqs, _ = self._make_reqs(prompt, sampling_params, input_ids)
        req = reqs[0]
        self._submit([req])
        detok = IncrementalDetokenizer(self.tokenizer, req.params.skip_special_tokens, req.params.stop,
                                       prompt_tail_ids=req.input_ids)
        try:
            while True:
                for out in self.scheduler.step():
                    if out.rid != req.rid:
                        continue
                    yield from self._stream_delta(detok, out)
                    if out.finished:
                        raise_error(out)
                        return
        finally:
            if not req.finished:
                self.scheduler.abort_request(req.rid)
                self.scheduler.step()

    @staticmethod
    def _stream_delta(detok: IncrementalDetokenizer, out: StepOutput) -> Iterator[str]:
        delta = detok.add(out.new_token_ids)
        if out.finished:
            delta += detok.finish(out.finish_reason)
        if delta:
            yield delta

    # ------------------------------------------------------------------ cache / stats
    def flush_cache(self) -> bool:
        return self.scheduler.flush_cache()

    def stats(self) -> dict[str, Any]:
        return self.scheduler.stats()

    def check_invariants(self) -> None:
        self.scheduler.check_invariants()

    def shutdown(self) -> None:
        compiler = self.scheduler.grammar_compiler
        if compiler is not None and hasattr(compiler, "shutdown"):
            compiler.shutdown()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
