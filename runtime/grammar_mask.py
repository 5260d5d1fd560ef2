"""Sampling with grammar masks: fills the int32 bitmask for constrained rows only, moves it to the
logits' device, and hands it to the sampler (which applies it after penalties, design.md §6).

A batch with no constrained rows builds no bitmask at all."""

from __future__ import annotations

import torch

from arborlm.kernels.bitmask import allocate_token_bitmask
from arborlm.runtime.sampler import Sampler, SampleResult
from arborlm.runtime.types import Req


class GrammarSampler:
    def __init__(self, vocab_size: int, eos_token_ids: set[int], device: str) -> None:
        self.vocab_size = vocab_size
        self.sampler = Sampler(vocab_size, eos_token_ids, device)
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
