"""Token vocabulary for the FSM index: every non-special token id mapped to the raw bytes it emits.

outlines-core's `Vocabulary.from_pretrained` downloads from the hub, so we build the vocabulary
from the tokenizer already in memory. Byte-level BPE tokens (GPT-2 style) are strings over the
GPT-2 "bytes to unicode" alphabet; sentencepiece-style tokens use `▁` for a space and `<0xNN>` for
raw bytes. Special tokens are left out: they never appear inside constrained text, and EOS is
handled by the index itself (allowed exactly in accepting states).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from outlines_core import Vocabulary


@lru_cache(maxsize=1)
def _gpt2_byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable stand-in character -> raw byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


@dataclass(frozen=True)
class TokenVocab:
    """What the compiler and matchers need to know about one tokenizer's tokens."""

    vocabulary: Vocabulary  # outlines-core vocabulary (non-special tokens only)
    token_bytes: tuple[bytes | None, ...]  # id -> raw bytes; None for special / unmapped ids
    eos_token_id: int
    vocab_size: int  # len(tokenizer): bitmask rows cover ids [0, vocab_size)
    byte_token: tuple[int | None, ...]  # raw byte b -> the single-byte token id emitting it
    # id -> True when some other token's bytes strictly extend this token's bytes
    # (used by jump-forward to decide whether a trailing token is safe to commit).
    extendable: tuple[bool, ...]

    @property
    def bitmask_words(self) -> int:
        return (self.vocab_size + 31) // 32


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in type(decoder).__name__ + repr(decoder)


def token_to_bytes(token: str, byte_level: bool) -> bytes | None:
    if byte_level:
        dec = _gpt2_byte_decoder()
        try:
            return bytes(dec[c] for c in token)
        except KeyError:  # an added (non-special) token in plain text
            return token.encode("utf-8")
    # sentencepiece style
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        try:
            return bytes([int(token[3:5], 16)])
        except ValueError:
            pass
    return token.replace("▁", " ").encode("utf-8")


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for tid, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(tid))
    return ids


def build_token_vocab(tokenizer: Any, eos_token_id: int | None = None) -> TokenVocab:
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id; pass eos_token_id explicitly")
    vocab_size = len(tokenizer)
    byte_level = _is_byte_level(tokenizer)
    special = _special_ids(tokenizer) | {eos}
    token_bytes: list[bytes | None] = [None] * vocab_size
    mapping: dict[bytes, list[int]] = {}
    for token, tid in tokenizer.get_vocab().items():
        if tid in special or tid >= vocab_size:
            continue
        b = token_to_bytes(token, byte_level)
        if not b:
            continue
        token_bytes[tid] = b
        mapping.setdefault(b, []).append(tid)
    byte_token: list[int | None] = [None] * 256
    for b, ids in mapping.items():
        if len(b) == 1:
            byte_token[b[0]] = min(ids)
    # A token is "extendable" when the next token in sorted byte order starts with it.
    order = sorted((b, tid) for tid, b in enumerate(token_bytes) if b is not None)
    extendable = [False] * vocab_size
    for (b, tid), (nb, _) in zip(order, order[1:]):
        if len(nb) > len(b) and nb.startswith(b):
            extendable[tid] = True
    return TokenVocab(
        vocabulary=Vocabulary(eos, mapping),
        token_bytes=tuple(token_bytes),
        eos_token_id=eos,
        vocab_size=vocab_size,
        byte_token=tuple(byte_token),
        extendable=tuple(extendable),
    )


# Building the vocabulary takes a fraction of a second; cache it per tokenizer object.
_cache: weakref.WeakKeyDictionary[Any, TokenVocab] = weakref.WeakKeyDictionary()
_cache_by_id: dict[int, TokenVocab] = {}  # for tokenizers that cannot be weak-referenced
_lock = threading.Lock()


def get_token_vocab(tokenizer: Any) -> TokenVocab:
    """The cached `TokenVocab` of this tokenizer object (built on first use)."""
    with _lock:
        try:
            hit = _cache.get(tokenizer)
        except TypeError:
            hit = _cache_by_id.get(id(tokenizer))
        if hit is not None:
            return hit
        tv = build_token_vocab(tokenizer)
        try:
            _cache[tokenizer] = tv
        except TypeError:
            _cache_by_id[id(tokenizer)] = tv
        return tv
