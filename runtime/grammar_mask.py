"""Sampling with grammar masks: fills the int32 bitmask for constrained rows only, moves it to the
logits' device, and hands it to the sampler (which applies it after penalties, design.md §6).

A batch with no constrained rows builds no bitmask at all."""

from __future__ import annotations

import torch

from arborlm.kernels.bitmask import allocate_token_bitmask, apply_token_bitmask
from arborlm.kernels.reduce import argmax_rows
from arborlm.runtime.sampler import Sampler, SampleResult, edits_logits
from arborlm.runtime.types import Req


class GrammarSampler:
    def __init__(self, vocab_size: int, eos_token_ids: set[int], device: str, random_seed: int = 0) -> None:
        self.vocab_size = vocab_size
        self.sampler = Sampler(vocab_size, eos_token_ids, device, random_seed)
        self._cpu_mask: torch.Tensor | None = None  # reused host buffer [max_rows, ceil(V/32)]

    def __call__(self, logits: torch.Tensor, reqs: list[Req]) -> SampleResult:
        rows = [i for i, r in enumerate(reqs) if r.grammar is not None]
        if not rows:
            return self.sampler.sample(logits, reqs)
        if self._cpu_mask is None or self._cpu_mask.shape[0] < len(reqs):
            self._cpu_mask = allocate_token_bitmask(max(len(reqs), 8), self.vocab_size)
            if logits.is_cuda:
                self._cpu_mask = self._cpu_mask.pin_memory()
        mask = self._cpu_mask[: len(reqs)]
        mask.fill_(-1)
        for i in rows:
            reqs[i].grammar.fill_bitmask(mask[i])
        mask = mask.to(logits.device, non_blocking=True)
        return self.sampler.sample(logits, reqs, bitmask=mask, bitmask_rows=rows)

    @staticmethod
    def can_verify_batched(req: Req) -> bool:
        """Every draft position can be sampled at once when nothing depends on the tokens before
        it but the grammar state: greedy, no penalties, no logprobs, min_new_tokens already met."""
        return req.params.is_greedy and not req.params.return_logprob and not edits_logits(req)

    def verify_greedy(self, logits: torch.Tensor, req: Req, draft: list[int]) -> list[int]:
        """Constrained greedy token at each of the k + 1 positions of a draft (logits `[k + 1, V]`:
        after the last sampled token, after d1, ..., after dk), assuming d1..dj were taken before
        position j; the caller keeps the prefix that matches. The matcher is walked along the
        draft to fill each position's mask, then returned to where it was."""
        m = req.grammar
        mask = allocate_token_bitmask(len(draft) + 1, self.vocab_size)
        for j in range(len(draft) + 1):
            m.fill_bitmask(mask[j])
            if j < len(draft):
                m.advance(draft[j])
        m.rollback(len(draft))
        mask = mask.to(logits.device, non_blocking=True)
        x = logits[:, : self.vocab_size].to(torch.float32, copy=True)
        apply_token_bitmask(x, mask, self.vocab_size)
        return argmax_rows(x).tolist()
