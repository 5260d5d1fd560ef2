from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def compiler(tokenizer):
    from arborlm.constrain import GrammarCompiler

    c = GrammarCompiler(tokenizer, num_threads=2)
    yield c
    c.shutdown()


@pytest.fixture(scope="session")
def token_vocab(tokenizer):
    from arborlm.constrain import get_token_vocab

    return get_token_vocab(tokenizer)
