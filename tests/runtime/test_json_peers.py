"""json_peers.py: the outlines peer is skipped with a JSON row (not an error) without outlines."""

from __future__ import annotations

import sys

import pytest


def test_outlines_peer_skipped_when_not_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    from arborlm.runtime.bench.json_peers import bench_outlines_peer

    monkeypatch.setitem(sys.modules, "outlines", None)  # makes `import outlines` raise ImportError
    row = bench_outlines_peer(engine=None, num=2)
    assert row["result"] == "outlines-peer" and row["skipped"] is True
    assert "outlines not importable" in row["reason"]


def test_why_invalid() -> None:
    from arborlm.runtime.bench.json_peers import why_invalid

    card = ('{"name": "Harry", "house": "Gryffindor", "blood status": "Half-blood", "occupation": "student", '
            '"wand": {"wood": "holly", "core": "phoenix feather", "length": 11}, "alive": "Alive", "patronus": "stag"}')
    assert why_invalid(card) is None
    assert why_invalid(card[:-1]).startswith("not JSON")
    assert why_invalid(card.replace('"length": 11', '"length": 30')).startswith("schema")
