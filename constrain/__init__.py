"""arborlm.constrain: regex / JSON schema / choice → compiled token FSM → per-request matcher →
bitmask rows, plus jump-forward. Imports nothing else from arborlm."""

from .compiler import CompiledGrammar, GrammarCompiler, GrammarError, canonical_key, choice_regex
from .jump_forward import forced_bytes
from .matcher import GrammarMatcher
from .schema import UnsupportedSchema, normalize_schema, schema_to_regex
from .vocab import TokenVocab, build_token_vocab, get_token_vocab

__all__ = [
    "CompiledGrammar",
    "GrammarCompiler",
    "GrammarError",
    "GrammarMatcher",
    "TokenVocab",
    "UnsupportedSchema",
    "build_token_vocab",
    "canonical_key",
    "choice_regex",
    "forced_bytes",
    "get_token_vocab",
    "normalize_schema",
    "schema_to_regex",
]
