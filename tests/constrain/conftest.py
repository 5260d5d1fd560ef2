from __future__ import annotations

import pytest

GRAMMAR_BACKENDS = ("outlines", "llguidance")


@pytest.fixture(scope="session", params=GRAMMAR_BACKENDS)
def compiler(request, tokenizer):
    """A GrammarCompiler per grammar engine: tests using it run on both."""
    from arborlm.constrain import GrammarCompiler

    c = GrammarCompiler(tokenizer, num_threads=2, backend=request.param)
    yield c
    c.shutdown()


@pytest.fixture(scope="session")
def token_vocab(tokenizer):
    from arborlm.constrain import get_token_vocab

    return get_token_vocab(tokenizer)
