"""The language oracle of the grammar tests: does a compiled grammar (either engine) accept a text?
The text is tokenized and walked token by token through a fresh matcher; a regex is not an oracle
here, since the llguidance engine compiles JSON schemas to Lark rules, not to a regex."""

from __future__ import annotations

from typing import Any

from arborlm.runtime.bench.grammar_checks import token_accepts


def accepts(compiler: Any, grammar: Any, text: str) -> bool:
    return token_accepts(grammar, compiler.tokenizer.encode(text, add_special_tokens=False))
