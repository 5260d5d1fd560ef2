"""Up-front check of a user `regex` grammar with interegular's parser, before any index build.

Both engines compile regular languages over the whole output (a full match): back-references,
word boundaries, anchors and lookarounds have no meaning there or cannot be compiled. outlines-core
would only fail deep inside its index build (seconds for big patterns) with a message about its
own automaton; here the construct is named with its character position at once.
"""

from __future__ import annotations

import re

from interegular.patterns import InvalidSyntax, Unsupported, _ParsePattern

# Constructs interegular parses but neither engine enforces in a full-match grammar.
_LOOKAROUND = re.compile(r"\(\?<?[=!]")


class RegexNotSupported(ValueError):
    """A user regex with a construct we cannot compile; the message names it and its position."""


def _unescaped(pattern: str, m: re.Match[str]) -> bool:
    """True when the match is not preceded by an odd number of backslashes."""
    i, n = m.start(), 0
    while i > 0 and pattern[i - 1] == "\\":
        i -= 1
        n += 1
    return n % 2 == 0


def check_user_regex(pattern: str) -> None:
    """Raise RegexNotSupported naming the first unsupported or invalid construct and its position."""
    for m in _LOOKAROUND.finditer(pattern):
        if _unescaped(pattern, m):
            raise RegexNotSupported(f"regex lookaround {m.group(0)!r}... at position {m.start()} is not supported: "
                                    "a grammar regex must describe the whole output")
    parser = _ParsePattern(pattern)
    try:
        parser.parse()
    except Unsupported as e:
        pos = max(0, parser.index - 1)
        if pos > 0 and pattern[pos - 1] == "\\":  # an escape: point at its backslash
            pos -= 1
        raise RegexNotSupported(f"regex construct at position {pos} ({pattern[pos:pos + 8]!r}) is not supported: "
                                f"{e}") from None
    except InvalidSyntax as e:
        raise RegexNotSupported(f"invalid regex {pattern[:60]!r}: {e or 'syntax error'}") from None
