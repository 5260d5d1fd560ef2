"""Sampler: greedy, temperature, top-k/p, min-p, seeds, penalties, min_new_tokens, bitmask, logprobs."""

from __future__ import annotations

import math
from collections import Counter

import torch

from arborlm.kernels.bitmask import allocate_token_bitmask, pack_allowed
from arborlm.runtime.sampler import Sampler
from arborlm.runtime.types import Req, SamplingParams

V = 16
EOS = 15


def req(rid: str = "r", input_ids: list[int] | None = None, output_ids: list[int] | None = None, **params) -> Req:
    return Req(rid=rid, input_ids=list(input_ids or [1, 2]), params=SamplingParams(**params),
               output_ids=list(output_ids or []))


def sampler(vocab: int = V) -> Sampler:
    return Sampler(vocab_size=vocab, eos_token_ids={EOS}, device="cpu")


def draws(logits_row: torch.Tensor, n: int, **params) -> Counter:
    """n unseeded draws of one distribution in a single batched call (rows are independent)."""
    torch.manual_seed(1234)
    out = sampler(logits_row.shape[0]).sample(logits_row.expand(n, -1).clone(), [req(**params) for _ in range(n)])
    return Counter(out.next_token_ids)


def test_greedy_is_argmax_and_ignores_padded_columns() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, V + 8)
    logits[:, V:] = 100.0  # lm_head padding past the vocab must never be chosen
    reqs = [req(temperature=0.0), req(top_k=1), req(temperature=0.0), req(top_k=1, temperature=0.7),
            req(temperature=0.0)]
    before = logits.clone()
    out = sampler().sample(logits, reqs)
    assert out.next_token_ids == logits[:, :V].argmax(-1).tolist()
    assert torch.equal(logits, before)  # the caller's logits are not modified
    assert out.logprobs == [None] * 5 and out.top_logprobs == [None] * 5


def test_temperature_low_is_argmax_and_one_follows_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0] + [-2.0] * (V - 4))
    assert set(draws(logits, 500, temperature=1e-3)) == {0}
    n = 4000
    for temp in (1.0, 5.0):  # empirical frequencies follow softmax(logits / temp)
        c = draws(logits, n, temperature=temp)
        p = torch.softmax(logits / temp, -1)
        for t in (0, 1, 2, 3, 4):  # within 5 standard deviations of the binomial
            sd = math.sqrt(n * p[t] * (1 - p[t]))
            assert abs(c[t] - n * p[t].item()) < 5 * sd + 1, (temp, t, c[t], n * p[t].item())


def test_top_k_restricts_support() -> None:
    logits = torch.randn(V, generator=torch.Generator().manual_seed(3))
    top3 = set(logits.topk(3).indices.tolist())
    c = draws(logits, 2000, top_k=3, temperature=1.5)
    assert set(c) == top3
    assert len(draws(logits, 2000, temperature=1.5)) > 3  # without top_k the support is wider


def test_top_p_restricts_to_nucleus() -> None:
    probs = torch.tensor([0.5, 0.3, 0.1, 0.05, 0.05])
    logits = probs.log()
    c = draws(logits, 3000, top_p=0.7)
    assert set(c) == {0, 1}
    assert abs(c[0] / 3000 - 0.625) < 0.05  # renormalised within the nucleus
    assert set(draws(logits, 3000, top_p=0.85)) == {0, 1, 2}


def test_min_p_drops_tokens_below_fraction_of_max() -> None:
    logits = torch.tensor([0.5, 0.3, 0.1, 0.1]).log()
    assert set(draws(logits, 2000, min_p=0.3)) == {0, 1}
    assert set(draws(logits, 2000, min_p=0.1)) == {0, 1, 2, 3}
    # combined with top_k (the sorted path): min_p still applies
    assert set(draws(logits, 2000, min_p=0.3, top_k=3)) == {0, 1}


def _generate(s: Sampler, reqs: list[Req], logits_fn, steps: int, watch: int) -> list[int]:
    """Run `steps` decode steps, appending each row's token; return row `watch`'s sequence."""
    for step in range(steps):
        out = s.sample(logits_fn(step, len(reqs)), reqs)
        for r, t in zip(reqs, out.next_token_ids, strict=True):
            r.output_ids.append(t)
    return list(reqs[watch].output_ids)


def _flat_logits(step: int, b: int) -> torch.Tensor:
    return torch.zeros(b, V)  # uniform: every draw depends only on the noise


def test_seed_reproducible_and_batch_independent() -> None:
    s = sampler()
    a = _generate(s, [req(seed=42)], _flat_logits, 30, 0)
    torch.manual_seed(999)  # the default generator's state must not matter for a seeded row
    b = _generate(s, [req(seed=42)], _flat_logits, 30, 0)
    assert a == b
    assert len(set(a)) > 3  # it does vary across steps (seed is mixed with the step)
    c = _generate(s, [req(seed=43)], _flat_logits, 30, 0)
    assert c != a
    # The same seeded row in a batch of 8 with other seeded, unseeded, greedy and top-k rows.
    others = [req(), req(seed=7), req(temperature=0.0), req(top_k=3), req(seed=42, top_p=0.5), req(), req(seed=1)]
    batch = others[:3] + [req(seed=42)] + others[3:]
    assert _generate(s, batch, _flat_logits, 30, 3) == a


def test_seeded_row_with_filters_is_batch_independent() -> None:
    g = torch.Generator().manual_seed(5)
    base = torch.randn(V, generator=g)

    def logits_fn(step: int, b: int) -> torch.Tensor:
        return base.roll(step).expand(b, -1).clone()

    alone = _generate(sampler(), [req(seed=11, top_k=5, top_p=0.9, temperature=0.8)], logits_fn, 20, 0)
    batch = [req(seed=3), req(temperature=0.0), req(seed=11, top_k=5, top_p=0.9, temperature=0.8), req(min_p=0.2)]
    assert _generate(sampler(), batch, logits_fn, 20, 2) == alone


def test_frequency_and_presence_penalties() -> None:
    logits = torch.tensor([[2.0, 1.0] + [-5.0] * (V - 2)]).expand(4, -1).clone()
    reqs = [
        req(temperature=0.0, output_ids=[0, 0, 0]),  # no penalty: 0
        req(temperature=0.0, output_ids=[0, 0, 0], frequency_penalty=0.5),  # 2 - 1.5 = 0.5 < 1
        req(temperature=0.0, output_ids=[0, 0, 0], presence_penalty=0.5),  # 2 - 0.5 = 1.5 > 1
        req(temperature=0.0, output_ids=[0], presence_penalty=1.5),  # 0.5 < 1
    ]
    assert sampler().sample(logits, reqs).next_token_ids == [0, 1, 0, 1]


def test_repetition_penalty_covers_prompt_and_negative_logits() -> None:
    logits = torch.tensor([[2.0, 1.5] + [-9.0] * (V - 2), [-1.0, -1.5] + [-9.0] * (V - 2),
                           [2.0, 1.5] + [-9.0] * (V - 2), [2.0, 1.5] + [-9.0] * (V - 2)])
    reqs = [
        req(temperature=0.0, input_ids=[0, 3], repetition_penalty=2.0),  # 2/2 = 1 < 1.5 (prompt token)
        req(temperature=0.0, input_ids=[0], repetition_penalty=2.0),  # -1 * 2 = -2 < -1.5
        req(temperature=0.0, input_ids=[3], output_ids=[0], repetition_penalty=2.0),  # output token too
        req(temperature=0.0, input_ids=[0], repetition_penalty=1.0),  # off
    ]
    assert sampler().sample(logits, reqs).next_token_ids == [1, 1, 1, 0]


def test_min_new_tokens_masks_eos_and_stop_tokens() -> None:
    logits = torch.full((4, V), -3.0)
    logits[:, EOS] = 5.0
    logits[:, 7] = 4.0
    logits[:, 2] = 1.0
    reqs = [
        req(temperature=0.0, min_new_tokens=2, max_new_tokens=5, output_ids=[4]),  # still short: no EOS
        req(temperature=0.0, min_new_tokens=2, max_new_tokens=5, output_ids=[4, 4]),  # long enough
        req(temperature=0.0, min_new_tokens=2, max_new_tokens=5, stop_token_ids=[7]),  # EOS and 7 banned
        req(temperature=0.0, min_new_tokens=2, max_new_tokens=5, ignore_eos=True),  # EOS is not a stop
    ]
    assert sampler().sample(logits, reqs).next_token_ids == [7, EOS, 2, EOS]


def test_min_new_tokens_yields_to_a_grammar_that_can_only_end() -> None:
    logits = torch.zeros(1, V)
    allowed = torch.zeros(1, V, dtype=torch.bool)
    allowed[0, EOS] = True
    out = sampler().sample(logits, [req(min_new_tokens=3, max_new_tokens=5)], bitmask=pack_allowed(allowed))
    assert out.next_token_ids == [EOS]


def test_bitmask_restricts_sampling_to_allowed_rows_only() -> None:
    n = 400
    logits = torch.zeros(n, V)
    logits[:, 0] = 3.0
    allowed = torch.zeros(n, V, dtype=torch.bool)
    allowed[:, [3, 7]] = True
    bitmask = allocate_token_bitmask(n, V)
    constrained = list(range(0, n, 2))
    bitmask[constrained] = pack_allowed(allowed[constrained])
    reqs = [req(temperature=0.0) if i == 0 else req() for i in range(n)]
    logits[0, 7] = 2.0
    torch.manual_seed(0)
    out = sampler().sample(logits, reqs, bitmask=bitmask, bitmask_rows=constrained)
    ids = out.next_token_ids
    assert ids[0] == 7  # greedy: best allowed token, not the global argmax 0
    assert {ids[i] for i in constrained} == {3, 7}
    assert 0 in {ids[i] for i in range(1, n, 2)}  # unconstrained rows are untouched
    # bitmask_rows=None applies every row
    out = sampler().sample(logits[:4].clone(), reqs[:4], bitmask=pack_allowed(allowed[:4]))
    assert set(out.next_token_ids) <= {3, 7}


def test_logprobs_are_of_raw_logits_and_top_logprobs_ordered() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, V + 4)  # padded
    reqs = [
        req(return_logprob=True, top_logprobs_num=4, temperature=0.5, frequency_penalty=1.0, output_ids=[1, 2]),
        req(),
        req(return_logprob=True, temperature=0.0, top_k=2),
    ]
    out = sampler().sample(logits, reqs)
    lp = torch.log_softmax(logits[:, :V], -1)
    for i in (0, 2):
        assert math.isclose(out.logprobs[i], lp[i, out.next_token_ids[i]].item(), abs_tol=1e-5)
    assert out.logprobs[1] is None and out.top_logprobs[1] is None
    assert out.top_logprobs[2] == []
    top = out.top_logprobs[0]
    assert len(top) == 4
    exp_vals, exp_ids = lp[0].topk(4)
    assert [t for t, _ in top] == exp_ids.tolist()
    assert all(math.isclose(a, b, abs_tol=1e-5) for (_, a), b in zip(top, exp_vals.tolist(), strict=True))
    assert [v for _, v in top] == sorted((v for _, v in top), reverse=True)
