"""README.md is tested: every ```python block runs, and every `arborlm.x.y` name it mentions exists.

Blocks are found when the tests are collected, so a section added later is picked up by itself.
Each block runs on its own (a fresh namespace: it must not rely on an earlier block's names).
Blocks that build an `Engine` share one per set of options for the whole session, with a KV pool
of `README_KV_TOKENS` unless the block sets one (a resource setting; outputs do not depend on it).

A block may opt out only with a marker comment on its own line that says why, e.g.
    # readme-test: not run (talks to a running server; covered by tests/server/test_readme_server.py)
The reason must name the test that covers the snippet another way; the block is still compiled.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
README_KV_TOKENS = 4096
OPT_OUT = re.compile(r"^\s*#\s*readme-test:\s*not run\s*\((?P<why>.+)\)\s*$", re.MULTILINE)
DOTTED_NAME = re.compile(r"`(arborlm(?:\.\w+)+)")


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    code: str

    @property
    def opt_out_reason(self) -> str | None:
        m = OPT_OUT.search(self.code)
        return m.group("why").strip() if m else None


def python_blocks(text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            start = i
            i += 1
            body = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            assert i < len(lines), f"README.md:{start + 1}: unclosed ```python block"
            blocks.append(Block(start + 1, "\n".join(body) + "\n"))
        i += 1
    return blocks


BLOCKS = python_blocks(README.read_text())


def test_readme_has_python_blocks() -> None:
    assert BLOCKS, "README.md has no ```python block: the parser or the README changed"


def test_block_parser_and_opt_out_marker() -> None:
    text = ("x\n```python\na = 1\n```\n```bash\nls\n```\n```python\n"
            "# readme-test: not run (server only; covered by tests/server/test_x.py)\nb = 2\n```\n")
    got = python_blocks(text)
    assert [(b.line, b.code) for b in got] == [
        (2, "a = 1\n"), (8, "# readme-test: not run (server only; covered by tests/server/test_x.py)\nb = 2\n")]
    assert got[0].opt_out_reason is None and got[1].opt_out_reason.startswith("server only")


class SharedEngines:
    """`Engine(...)` for README blocks: one engine per distinct set of options, kept for the session."""

    def __init__(self) -> None:
        self.engines: dict[tuple, Any] = {}

    def __call__(self, model: str = "smollm2", **options: Any) -> Any:
        from arborlm.runtime.engine import Engine

        options.setdefault("max_total_tokens", README_KV_TOKENS)
        key = (model, tuple(sorted((k, repr(v)) for k, v in options.items())))
        if key not in self.engines:
            self.engines[key] = Engine(model=model, **options)
        return self.engines[key]

    def close(self) -> None:
        for eng in self.engines.values():
            eng.shutdown()


@pytest.fixture(scope="session")
def shared_engines(smollm2_path: str):
    engines = SharedEngines()
    yield engines
    engines.close()


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_python_block(block: Block, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    code = compile(block.code, f"README.md:{block.line}", "exec")  # every block must at least parse
    why = block.opt_out_reason
    if why is not None:
        assert re.search(r"tests/\S+\.py", why), \
            f"README.md:{block.line}: the opt-out reason must name the test covering it: {why!r}"
        pytest.skip(f"README.md:{block.line} opts out: {why}")
    if "Engine(" in block.code:
        import arborlm.runtime

        monkeypatch.setattr(arborlm.runtime, "Engine", request.getfixturevalue("shared_engines"), raising=False)
    exec(code, {"__name__": f"readme_block_{block.line}"})


def resolve(dotted: str) -> Any:
    """Import the longest importable module prefix of `dotted`, then get the remaining attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)  # AttributeError: the README names something that does not exist
        return obj
    raise ModuleNotFoundError(dotted)


DOTTED = sorted(set(DOTTED_NAME.findall(README.read_text())))


@pytest.mark.parametrize("dotted", DOTTED)
def test_readme_names_exist(dotted: str) -> None:
    assert resolve(dotted) is not None
