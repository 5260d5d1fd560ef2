from __future__ import annotations

import random


def test_every_non_special_token_round_trips(tokenizer, token_vocab):
    special = set(tokenizer.all_special_ids) | {i for i, a in tokenizer.added_tokens_decoder.items() if a.special}
    missing = []
    for tid in range(len(tokenizer)):
        b = token_vocab.token_bytes[tid]
        if tid in special:
            assert b is None
            continue
        if b is None:
            missing.append(tid)
            continue
        text = tokenizer.decode([tid], clean_up_tokenization_spaces=False)
        assert text == b.decode("utf-8", errors="replace"), (tid, text, b)
    assert not missing
    assert token_vocab.eos_token_id == tokenizer.eos_token_id == 2
    # Jump-forward steps over single-byte tokens: all printable ASCII has one (a few control and
    # never-in-UTF-8 bytes do not; forced text simply stops there).
    assert all(token_vocab.byte_token[b] is not None for b in range(0x20, 0x7F))


def test_concatenated_token_bytes_equal_text(tokenizer, token_vocab):
    rng = random.Random(0)
    alphabet = 'abc XYZ 012 {}[]":,\\\n\té漢字🙂'
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert b"".join(token_vocab.token_bytes[i] for i in ids) == text.encode("utf-8")


def test_vocab_is_cached_per_tokenizer(tokenizer, token_vocab):
    from arborlm.constrain import get_token_vocab

    assert get_token_vocab(tokenizer) is token_vocab
