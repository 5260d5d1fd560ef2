from __future__ import annotations

import random
import re
import time
import zlib

import pytest
import torch

# [0-9], not \d: in outlines-core (Rust regex) \d is any Unicode digit.
REGEXES = {
    "ipv4": r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
    "iso_date": r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "email": r"[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,15}(\.[a-z]{2,6}){1,2}",
    "enum": r"(red|green|blue|light green)",
    "phone": r"\+?1? ?\(?[0-9]{3}\)?[ -]?[0-9]{3}-[0-9]{4}",
}


def allowed_from_mask(row: torch.Tensor, vocab_size: int) -> set[int]:
    bits = ((row.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1).flatten()[:vocab_size]
    return set(bits.nonzero().flatten().tolist())


@pytest.mark.parametrize("name", sorted(REGEXES))
def test_random_walks_fullmatch(compiler, tokenizer, name):
    g = compiler.compile_sync("regex", REGEXES[name])
    eos = g.eos_token_id
    row = torch.zeros(g.vocab.bitmask_words, dtype=torch.int32)
    rng = random.Random(zlib.crc32(name.encode()))
    for _walk in range(10):
        m = g.matcher()
        out: list[int] = []
        for _ in range(200):
            m.fill_bitmask(row)
            allowed = allowed_from_mask(row, g.vocab.vocab_size)
            assert allowed == set(m.allowed_tokens())  # bitmask == the index's allowed set
            assert (eos in allowed) == m.is_accepting()  # EOS only in accepting states
            # Prefer EOS now and then so walks end; otherwise a random allowed token.
            tok = eos if eos in allowed and (len(allowed) == 1 or rng.random() < 0.3) else rng.choice(
                sorted(allowed - {eos}))
            m.advance(tok)
            if tok == eos:
                break
            out.append(tok)
        assert m.is_terminated()
        text = tokenizer.decode(out)
        assert re.fullmatch(REGEXES[name], text), (name, text)


def test_disallowed_token_raises_and_eos_needs_accepting(compiler, tokenizer):
    g = compiler.compile_sync("regex", r"ab+")
    m = g.matcher()
    with pytest.raises(ValueError):
        m.advance(g.eos_token_id)
    with pytest.raises(ValueError):
        m.advance(tokenizer.encode("b", add_special_tokens=False)[0])
    m.advance(tokenizer.encode("a", add_special_tokens=False)[0])
    m.advance(tokenizer.encode("b", add_special_tokens=False)[0])
    assert m.is_accepting() and not m.is_terminated()
    m.advance(g.eos_token_id)
    assert m.is_terminated()
    row = torch.full((g.vocab.bitmask_words,), -1, dtype=torch.int32)
    m.fill_bitmask(row)
    assert int(row.abs().sum()) == 0


def test_rollback_and_copy(compiler, tokenizer):
    g = compiler.compile_sync("regex", REGEXES["iso_date"])
    ids = tokenizer.encode("2024-05-17", add_special_tokens=False)
    m = g.matcher()
    row, row2 = (torch.zeros(g.vocab.bitmask_words, dtype=torch.int32) for _ in range(2))
    masks = []
    for t in ids:
        m.fill_bitmask(row)
        masks.append(row.clone())
        m.advance(t)
    m.fill_bitmask(row)
    masks.append(row.clone())
    assert m.is_accepting()
    c = m.copy()
    for k in range(len(ids), -1, -1):
        m2 = c.copy()
        m2.rollback(k)
        assert m2.num_tokens == len(ids) - k
        m2.fill_bitmask(row)
        assert torch.equal(row, masks[len(ids) - k])
        fresh = g.matcher()
        for t in ids[: len(ids) - k]:
            fresh.advance(t)
        fresh.fill_bitmask(row2)
        assert torch.equal(row, row2)
    m.rollback(3)
    m.fill_bitmask(row)
    for t in ids[-3:]:
        m.advance(t)
    assert m.is_accepting()
    with pytest.raises(ValueError):
        m.rollback(len(ids) + 1)


def test_fill_bitmask_is_fast(compiler):
    g = compiler.compile_sync("json_schema", {"type": "object", "properties": {"a": {"type": "string"}}})
    m = g.matcher()
    rows = torch.zeros(4, g.vocab.bitmask_words, dtype=torch.int32)
    for _ in range(100):
        m.fill_bitmask(rows[1])
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        m.fill_bitmask(rows[1])
    us = (time.perf_counter() - t0) / n * 1e6
    print(f"fill_bitmask: {us:.1f} us/call")
    assert us < 200  # ~3 us measured; generous for a loaded 2-core box
    assert int(rows[0].abs().sum()) == 0 and int(rows[2].abs().sum()) == 0  # only its own row


def test_cached_masks_equal_fresh_masks(compiler, tokenizer):
    """fill_bitmask caches a row per FSM state (outlines engine): every fill, first or cached, equals
    the outlines-core index's allowed set for the current state wherever the grammar forces no text,
    across matchers sharing the grammar. Where it forces text, both engines allow only the
    canonical tokens of the forced text: a non-empty subset, never a token outside the grammar."""
    from arborlm.constrain import GrammarCompiler

    schema = {"type": "object", "properties": {"s": {"type": "string"}, "n": {"type": "number"}}, "required": ["s"]}
    g = compiler.compile_sync("json_schema", schema)
    ref_compiler = compiler if compiler.backend == "outlines" else GrammarCompiler(tokenizer, num_threads=1)
    ref = ref_compiler.compile_sync("json_schema", schema)
    text_ids = tokenizer.encode('{"s":"aaaa bbbb aaaa","n":-12.5e+3}', add_special_tokens=False)
    row = torch.zeros(g.vocab.bitmask_words, dtype=torch.int32)
    for _ in range(2):  # the second walk is served from the cache
        m, ref_m = g.matcher(), ref.matcher()
        for t in text_ids + [g.eos_token_id]:
            row.fill_(0)
            m.fill_bitmask(row)
            got, want = allowed_from_mask(row, g.vocab.vocab_size), set(ref.index.get_allowed_tokens(ref_m.state))
            assert got == want if not ref_m.forced_text() else got and got <= want
            if g is ref and m.canonical_token() is not None:
                assert got == {m.canonical_token()}
            m.advance(t)
            ref_m.advance(t)
    assert g is not ref or g._masks  # the outlines cache was used
