"""How `select` turns prompt logprobs into a choice (pure Python, shared by every backend).

Token boundaries: SGLang's rule. The prefix and each `prefix + choice` are tokenized; the scored
tokens of a choice start at the longest common prefix of all those tokenizations, so a choice whose
first token merges with the end of the prefix is scored on its real tokens, and the shared part is
a prefix of the prefix's own tokens (which the radix cache holds).

Methods (each returns one score per choice; the highest wins, the first on ties):
- token_length_normalized: mean conditional logprob of the choice's tokens.
- greedy_token: compare choices token by token (a shorter one is padded with its own mean), keeping
  the best at each position; the score is the mean logprob, the winner the survivor.
- unconditional_likelihood_normalized: mean of (conditional - unconditional) token logprobs, where the
  unconditional logprobs come from the choice's tokens after only the `UNCONDITIONAL_START` token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChoiceTokens:
    shared_len: int  # tokens every prefix + choice tokenization shares (a prefix of the prefix's tokens)
    full_ids: list[list[int]]  # tokens of prefix + choice, one list per choice

    def choice_ids(self, i: int) -> list[int]:
        return self.full_ids[i][self.shared_len:]


def split_choice_tokens(encode: Callable[[str], list[int]], prefix: str, choices: Sequence[str]) -> ChoiceTokens:
    prefix_ids = encode(prefix)
    full = [encode(prefix + c) for c in choices]
    shared = len(prefix_ids)
    for ids in full:
        n = 0
        while n < min(shared, len(ids)) and ids[n] == prefix_ids[n]:
            n += 1
        shared = n
    if shared == 0:
        raise ValueError("select needs some text before it (the choices are scored as its continuations)")
    if any(len(ids) <= shared for ids in full):
        raise ValueError("select: a choice adds no token to the prefix")
    return ChoiceTokens(shared, full)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _argmax(scores: Sequence[float]) -> int:
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def token_length_normalized(cond: list[list[float]], uncond: list[list[float]] | None) -> tuple[int, list[float]]:
    scores = [_mean(lp) for lp in cond]
    return _argmax(scores), scores


def greedy_token(cond: list[list[float]], uncond: list[list[float]] | None) -> tuple[int, list[float]]:
    means = [_mean(lp) for lp in cond]
    width = max(len(lp) for lp in cond)
    padded = [lp + [means[i]] * (width - len(lp)) for i, lp in enumerate(cond)]
    alive = list(range(len(cond)))
    for pos in range(width):
        best = max(padded[i][pos] for i in alive)
        alive = [i for i in alive if padded[i][pos] == best]
        if len(alive) == 1:
            break
    return alive[0], means


def unconditional_likelihood_normalized(cond: list[list[float]],
                                        uncond: list[list[float]] | None) -> tuple[int, list[float]]:
    if uncond is None:
        raise ValueError("unconditional_likelihood_normalized needs unconditional logprobs")
    scores = [_mean([c - u for c, u in zip(cl, ul)]) for cl, ul in zip(cond, uncond)]
    return _argmax(scores), scores


SCORERS: dict[str, Callable[[list[list[float]], list[list[float]] | None], tuple[int, list[float]]]] = {
    "token_length_normalized": token_length_normalized,
    "greedy_token": greedy_token,
    "unconditional_likelihood_normalized": unconditional_likelihood_normalized,
}
NEEDS_UNCONDITIONAL = {"unconditional_likelihood_normalized"}


def unconditional_start_id(tokenizer: object) -> int:
    """The one token the unconditional pass puts before a choice: BOS if the tokenizer has one, else EOS."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return int(bos if bos is not None else tokenizer.eos_token_id)  # type: ignore[attr-defined]
