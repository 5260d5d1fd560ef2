"""The sampler: one next token per row of a batch's logits.

Order (design.md §3): penalties → grammar bitmask (and min_new_tokens EOS mask) →
temperature → top-k → top-p → min-p → sample. Greedy rows (`params.is_greedy`) take the
argmax after penalties and masks.

Sampling uses the exponential race: token = argmax(probs / E) with E ~ Exp(1) i.i.d. per token,
which draws exactly from `probs`. Its noise is indexed by token id, so a seeded row gets noise
from its own `torch.Generator` seeded by (seed, len(output_ids)) and its draw does not depend on
what else is in the batch. Unseeded rows share one noise tensor from the sampler's own generator,
seeded once with `random_seed` (EngineConfig.random_seed): the same seed and the same sequence of
batches reproduce their samples, whatever else the process draws from torch's global generator.

Logprobs are of the MODEL's distribution: log_softmax of the raw logits (first `vocab_size`
columns), before penalties, grammar masks, temperature and top-k/p truncation, as OpenAI and
SGLang report them. Only rows with `params.return_logprob` pay for them.

Row i of `logits` belongs to `reqs[i]`; the caller's logits tensor is never modified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from arborlm.kernels.bitmask import apply_token_bitmask
from arborlm.kernels.reduce import argmax_rows

from .types import Req

_MASK64 = (1 << 64) - 1


def _mix_seed(seed: int, step: int) -> int:
    """A deterministic 63-bit seed from (request seed, decode step): splitmix64 of both."""
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & ((1 << 63) - 1)


@dataclass
class SampleResult:
    next_token_ids: list[int]
    logprobs: list[float | None]  # per row; None unless req.params.return_logprob
    # per row; None unless return_logprob, else top_logprobs_num (id, logprob) pairs, best first
    top_logprobs: list[list[tuple[int, float]] | None]


def edits_logits(req: Req) -> bool:
    """Whether a penalty or min_new_tokens changes this row's logits this step."""
    p = req.params
    return (p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 or p.repetition_penalty != 1.0
            or len(req.output_ids) < p.min_new_tokens)


class Sampler:
    def __init__(self, vocab_size: int, eos_token_ids: Iterable[int], device: torch.device | str = "cpu",
                 random_seed: int = 0):
        self.vocab_size = vocab_size
        self.eos_token_ids = sorted({int(t) for t in eos_token_ids if 0 <= int(t) < vocab_size})
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)  # noise of unseeded rows
        self.generator.manual_seed(random_seed)

    # ---- public ------------------------------------------------------------------------------

    def sample(self, logits: torch.Tensor, reqs: list[Req], bitmask: torch.Tensor | None = None,
               bitmask_rows: list[int] | None = None) -> SampleResult:
        """logits: float [B, V_padded >= vocab_size], row i for reqs[i]. bitmask: int32
        [B, ceil(vocab/32)] row-aligned with logits (kernels/bitmask.py layout), applied to
        `bitmask_rows` (None: every row)."""
        b = len(reqs)
        if logits.dim() != 2 or logits.shape[0] != b or logits.shape[1] < self.vocab_size:
            raise ValueError(f"logits {tuple(logits.shape)} do not fit {b} requests x vocab {self.vocab_size}")
        v = self.vocab_size
        raw = logits[:, :v]  # [B, V] view of the model's logits (for logprobs)
        use_mask = bitmask is not None and (bitmask_rows is None or len(bitmask_rows) > 0)
        edits = use_mask or any(edits_logits(r) for r in reqs)
        # [B, V] working copy, masked/penalised in place; a plain view when nothing edits it
        x = raw.to(torch.float32, copy=edits)

        if edits:
            self._apply_penalties(x, reqs)
            if use_mask:
                apply_token_bitmask(x, bitmask, v, bitmask_rows)
            self._apply_min_new_tokens(x, reqs)

        next_ids = torch.empty(b, dtype=torch.long, device=x.device)
        greedy = [i for i, r in enumerate(reqs) if r.params.is_greedy]
        sampled = [i for i, r in enumerate(reqs) if not r.params.is_greedy]
        if len(greedy) == b:
            next_ids = argmax_rows(x)
        else:
            if greedy:
                g = torch.tensor(greedy, device=x.device)
                next_ids[g] = argmax_rows(x[g])
            s = torch.tensor(sampled, device=x.device)
            xs = x if len(sampled) == b else x[s]  # [S, V]
            probs = self._filtered_probs(xs, [reqs[i].params for i in sampled])
            next_ids[s] = self._race(probs, [reqs[i] for i in sampled])

        logprobs: list[float | None] = [None] * b
        top: list[list[tuple[int, float]] | None] = [None] * b
        lp_rows = [i for i, r in enumerate(reqs) if r.params.return_logprob]
        ids_list = next_ids.tolist()
        if lp_rows:
            self._logprobs(raw, lp_rows, next_ids, reqs, logprobs, top)
        return SampleResult(next_token_ids=ids_list, logprobs=logprobs, top_logprobs=top)

    # ---- steps -------------------------------------------------------------------------------

    def _apply_penalties(self, x: torch.Tensor, reqs: list[Req]) -> None:
        """Repetition (HF style, over prompt + output), then frequency / presence (over output).
        Count tensors are built only for rows that use a penalty."""
        rows = [i for i, r in enumerate(reqs)
                if r.params.frequency_penalty != 0.0 or r.params.presence_penalty != 0.0
                or r.params.repetition_penalty != 1.0]
        if not rows:
            return
        dev, v = x.device, self.vocab_size
        rows_t = torch.tensor(rows, device=dev)
        sel = x[rows_t]  # [R, V]

        rep_rows = [j for j, i in enumerate(rows) if reqs[i].params.repetition_penalty != 1.0]
        if rep_rows:
            ids = [[t for t in reqs[rows[j]].fill_ids if 0 <= t < v] for j in rep_rows]
            seen = self._scatter_counts(len(rows), rep_rows, ids, dev) > 0  # [R, V] bool
            rp = torch.tensor([reqs[i].params.repetition_penalty for i in rows], device=dev).unsqueeze(1)
            sel = torch.where(seen, torch.where(sel > 0, sel / rp, sel * rp), sel)

        fp_rows = [j for j, i in enumerate(rows)
                   if reqs[i].params.frequency_penalty != 0.0 or reqs[i].params.presence_penalty != 0.0]
        if fp_rows:
            ids = [[t for t in reqs[rows[j]].output_ids if 0 <= t < v] for j in fp_rows]
            counts = self._scatter_counts(len(rows), fp_rows, ids, dev)  # [R, V] float
            freq = torch.tensor([reqs[i].params.frequency_penalty for i in rows], device=dev).unsqueeze(1)
            pres = torch.tensor([reqs[i].params.presence_penalty for i in rows], device=dev).unsqueeze(1)
            sel = sel - freq * counts - pres * (counts > 0).to(sel.dtype)
        x[rows_t] = sel

    def _scatter_counts(self, n_rows: int, which: list[int], ids: list[list[int]],
                        dev: torch.device) -> torch.Tensor:
        """float [n_rows, V]: counts[which[k], t] = occurrences of t in ids[k]; other rows zero."""
        counts = torch.zeros(n_rows, self.vocab_size, dtype=torch.float32, device=dev)
        row_idx = [r for r, seq in zip(which, ids, strict=True) for _ in seq]
        tok_idx = [t for seq in ids for t in seq]
        if tok_idx:
            counts.index_put_((torch.tensor(row_idx, device=dev), torch.tensor(tok_idx, device=dev)),
                              torch.ones(len(tok_idx), device=dev), accumulate=True)
        return counts

    def _apply_min_new_tokens(self, x: torch.Tensor, reqs: list[Req]) -> None:
        """Forbid EOS (unless ignore_eos) and stop_token_ids while output is shorter than
        min_new_tokens. Applied after the grammar mask, and skipped for a row where it would leave
        nothing allowed (a grammar that can only end), so such a row never becomes all -inf."""
        rows: list[int] = []
        toks: list[int] = []
        for i, r in enumerate(reqs):
            if len(r.output_ids) >= r.params.min_new_tokens:
                continue
            banned = set(r.params.stop_token_ids) | (set() if r.params.ignore_eos else set(self.eos_token_ids))
            banned = {t for t in banned if 0 <= t < self.vocab_size}
            rows += [i] * len(banned)
            toks += sorted(banned)
        if not toks:
            return
        dev = x.device
        uniq = sorted(set(rows))
        uniq_t = torch.tensor(uniq, device=dev)
        local = {i: k for k, i in enumerate(uniq)}
        sel = x[uniq_t]  # [R, V]
        masked = sel.clone()
        masked[torch.tensor([local[i] for i in rows], device=dev), torch.tensor(toks, device=dev)] = float("-inf")
        alive = torch.isfinite(masked).any(dim=-1, keepdim=True)  # [R, 1]; no host sync
        x[uniq_t] = torch.where(alive, masked, sel)

    def _filtered_probs(self, xs: torch.Tensor, params: list) -> torch.Tensor:
        """xs: float [S, V] masked logits of sampling rows -> probs [S, V] after temperature,
        top-k, top-p (on the top-k-renormalised distribution) and min-p (relative to the max)."""
        dev, v = xs.device, xs.shape[1]
        temp = torch.tensor([p.temperature for p in params], device=dev, dtype=xs.dtype).unsqueeze(1)
        xs = xs / temp
        ks = [p.top_k if 0 < p.top_k < v else v for p in params]
        need_k = any(k < v for k in ks)
        need_p = any(p.top_p < 1.0 for p in params)
        need_min_p = any(p.min_p > 0.0 for p in params)
        if not (need_k or need_p):
            probs = torch.softmax(xs, dim=-1)
            if need_min_p:
                min_p = torch.tensor([p.min_p for p in params], device=dev).unsqueeze(1)
                thresh = probs.max(dim=-1, keepdim=True).values * min_p
                probs = probs.masked_fill(probs < thresh, 0.0)
            return probs
        # One sort per step serves top-k, top-p and min-p; filtering happens in sorted order.
        sorted_x, order = xs.sort(dim=-1, descending=True, stable=True)  # [S, V]
        p_sorted = torch.softmax(sorted_x, dim=-1)
        pos = torch.arange(v, device=dev).unsqueeze(0)  # [1, V]
        if need_k:
            k_t = torch.tensor(ks, device=dev).unsqueeze(1)
            p_sorted = p_sorted.masked_fill(pos >= k_t, 0.0)
            p_sorted = p_sorted / p_sorted.sum(dim=-1, keepdim=True)
        if need_p:
            # top_p = 1 -> 2.0 so float error in the cumsum never trims an unfiltered row's tail.
            top_p = torch.tensor([p.top_p if p.top_p < 1.0 else 2.0 for p in params], device=dev,
                                 dtype=p_sorted.dtype).unsqueeze(1)
            # Drop a token when the mass strictly before it already reaches top_p (keeps >= 1 token).
            before = p_sorted.cumsum(dim=-1) - p_sorted
            p_sorted = p_sorted.masked_fill(before >= top_p, 0.0)
        if need_min_p:
            min_p = torch.tensor([p.min_p for p in params], device=dev, dtype=p_sorted.dtype).unsqueeze(1)
            p_sorted = p_sorted.masked_fill(p_sorted < p_sorted[:, :1] * min_p, 0.0)
        return torch.zeros_like(p_sorted).scatter_(1, order, p_sorted)

    def _race(self, probs: torch.Tensor, reqs: list[Req]) -> torch.Tensor:
        """probs [S, V] (unnormalised is fine) -> token ids [S] via argmax(probs / Exp(1) noise)."""
        noise = torch.empty_like(probs)  # [S, V]
        seeded = [k for k, r in enumerate(reqs) if r.params.seed is not None]
        if len(seeded) < len(reqs):
            noise.exponential_(generator=self.generator)
        for k in seeded:  # per-row loop only for seeded rows: each has its own generator
            r = reqs[k]
            gen = torch.Generator(device=probs.device)
            gen.manual_seed(_mix_seed(int(r.params.seed), len(r.output_ids)))
            noise[k].exponential_(generator=gen)
        # Exp(1) can round to 0: clamp so a zero-probability token never wins by 0/0 or p/0.
        noise.clamp_(min=torch.finfo(noise.dtype).tiny)
        return argmax_rows(probs / noise)

    def _logprobs(self, raw: torch.Tensor, rows: list[int], next_ids: torch.Tensor, reqs: list[Req],
                  logprobs: list[float | None], top: list[list[tuple[int, float]] | None]) -> None:
        """log_softmax of the raw logits [B, V] for `rows`; fills `logprobs` and `top` in place."""
        rows_t = torch.tensor(rows, device=raw.device)
        lp = torch.log_softmax(raw[rows_t].float(), dim=-1)  # [L, V]
        chosen = lp.gather(1, next_ids[rows_t].unsqueeze(1)).squeeze(1).tolist()
        n_top = max(reqs[i].params.top_logprobs_num for i in rows)
        top_vals: list[list[float]] = []
        top_ids: list[list[int]] = []
        if n_top > 0:
            tv, ti = lp.topk(min(n_top, lp.shape[1]), dim=-1)  # [L, n_top], sorted descending
            top_vals, top_ids = tv.tolist(), ti.tolist()
        for k, i in enumerate(rows):
            logprobs[i] = chosen[k]
            n = reqs[i].params.top_logprobs_num
            top[i] = list(zip(top_ids[k][:n], top_vals[k][:n], strict=True)) if n > 0 else []
