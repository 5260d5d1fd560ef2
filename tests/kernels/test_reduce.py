"""Chunked argmax / top-k (kernels/reduce.py) against torch's own ops on awkward shapes."""

from __future__ import annotations

import pytest
import torch

from arborlm.kernels.reduce import CHUNK, MIN_COLUMNS, argmax_rows, topk_rows

WIDTHS = [MIN_COLUMNS, 49152, 49152 + 7, 5 * CHUNK - 1, 100]  # exact chunks, a tail, narrow (plain path)


def _logits(b: int, v: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, v, generator=g) * 4


@pytest.mark.parametrize("v", WIDTHS)
@pytest.mark.parametrize("b", [1, 33])
def test_argmax_matches_torch(b, v):
    x = _logits(b, v, seed=b + v)
    x[0, v - 1] = 100.0  # the max in the tail (or last chunk)
    if b > 1:
        x[1, :] = float("-inf")  # a fully masked row -> index 0, like torch
        x[2, 3] = x[2, v // 2] = x[2, v - 1] = 50.0  # ties: first index wins
        if v > CHUNK:
            x[3, CHUNK - 1] = x[3, CHUNK] = 60.0  # tie across a chunk boundary
        x[4, :] = float("-inf")
        x[4, v - 1] = 0.0  # only the very last column allowed
    assert torch.equal(argmax_rows(x), x.argmax(dim=-1))


@pytest.mark.parametrize("v", WIDTHS)
@pytest.mark.parametrize("b", [1, 33])
@pytest.mark.parametrize("k", [1, 8])
def test_topk_values_match_torch(b, v, k):
    x = _logits(b, v, seed=3 * b + v + k)
    if b > 1:
        x[1, :CHUNK] += 1000.0  # all of the top k in one chunk
        x[2, :] = -5.0
        x[2, v - k :] = 7.0  # top k in the tail / last columns
    vals, idx = topk_rows(x, k)
    ref_vals, _ = x.topk(k, dim=-1)
    assert torch.equal(vals, ref_vals)
    assert torch.equal(x.gather(1, idx), vals)  # the indices point at those values
    assert all(len(set(r)) == k for r in idx.tolist())  # no index twice


def test_topk_with_ties_in_chunk_maxima():
    x = torch.zeros(2, 8 * CHUNK)
    x[:, ::CHUNK] = 1.0  # every chunk has the same max, once
    vals, idx = topk_rows(x, 8)
    assert torch.equal(vals, torch.ones(2, 8))
    assert sorted(idx[0].tolist()) == list(range(0, 8 * CHUNK, CHUNK))
