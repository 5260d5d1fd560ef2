"""`arborlm bench peers --table/--plot/--from-jsonl`: rendering from canned JSON lines (no model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from arborlm.runtime.bench.peers_render import plot_data, read_lines, table_markdown
from arborlm.runtime.bench.peers_report import RunMeasurement, SystemOutcome, add_ratios, summarize_outcome
from arborlm.runtime.cli import main

HEADER = {"bench": "peers", "kind": "run", "date": "2026-11-30 12:00 UTC", "machine": "Test CPU, 2 cores",
          "model": "smollm2", "dtype": "bfloat16", "threads": 2, "repeats": 3,
          "command": "arborlm bench peers --repeats 3"}


def _lines(workload: str, runs: dict[str, RunMeasurement], skipped: dict[str, str], **score) -> list[dict]:
    out = [summarize_outcome(workload, SystemOutcome(s, [r], info={"weights": w, "version": "1.0"}),
                             score.get(s), extra={"kind": "result"})
           for (s, r), w in zip(runs.items(), ["bfloat16", "GGUF Q4_1 (4-bit)", "bfloat16"])]
    out += [summarize_outcome(workload, SystemOutcome(s, skipped_reason=why), extra={"kind": "result"})
            for s, why in skipped.items()]
    return add_ratios(out)


@pytest.fixture()
def canned() -> list[dict]:
    few_shot = _lines("few-shot", {"arborlm": RunMeasurement(2.0, 400), "llama.cpp": RunMeasurement(8.0, 400),
                                   "transformers": RunMeasurement(20.0, 400)}, {},
                      arborlm={"accuracy": 0.25}, **{"llama.cpp": {"accuracy": 0.125}})
    latency = _lines("latency", {"arborlm": RunMeasurement(3.0, 256, timings={"ttft_ms": 40.0, "decode_tok_s": 90.0}),
                                 "llama.cpp": RunMeasurement(2.0, 256, timings={"ttft_ms": 20.0, "decode_tok_s": 180.0})},
                     {})
    json_lines = _lines("json", {"arborlm": RunMeasurement(5.0, 1000)}, {"outlines": "outlines is not installed"},
                        arborlm={"valid_share": 1.0})
    return [HEADER, *few_shot, *latency, *json_lines]


def test_table_has_the_run_facts_every_line_and_arborlm_ratios(canned) -> None:
    md = table_markdown(canned)
    assert "Test CPU, 2 cores" in md and "2026-11-30 12:00 UTC" in md and "threads per system: 2" in md
    assert "`arborlm bench peers --repeats 3`" in md and "medians of 3 runs" in md
    assert "| llama.cpp | GGUF Q4_1 (4-bit) | 1.0 |" in md and "| arborlm | bfloat16 | 1.0 |" in md
    rows = [r for r in md.splitlines() if r.startswith("| few-shot")]
    assert len(rows) == 3
    assert rows[0].startswith("| few-shot | arborlm | 2.00 | 200.0 |") and "accuracy 0.250" in rows[0]
    assert rows[1].endswith("| 4.00× |")  # arborlm's throughput over llama.cpp's
    assert rows[2].endswith("| 10.00× |")
    latency_peer = next(r for r in md.splitlines() if r.startswith("| latency | llama.cpp"))
    assert "| 20 |" in latency_peer and latency_peer.endswith("| 0.50× |")  # by decode tok/s: slower
    assert "| json | outlines | skipped: outlines is not installed |" in md
    assert "valid 1.000" in md


def test_plot_data_groups_throughput_by_workload_and_system(canned) -> None:
    data = plot_data(canned)
    assert data.workloads == ["few-shot", "latency", "json"]
    assert data.systems == ["arborlm", "llama.cpp", "transformers"]  # skipped outlines has no bar
    assert data.metric_names == ["output_tok_s", "decode_tok_s", "output_tok_s"]
    assert data.values["arborlm"] == [200.0, 90.0, 200.0]
    assert data.values["llama.cpp"] == [50.0, 180.0, None]
    assert data.values["transformers"] == [20.0, None, None]
    assert "Test CPU" in data.title


def test_plot_png_is_written(canned, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is an optional peer dependency (make bench-peers); "
                                             "the plot's data is tested without it above")
    from arborlm.runtime.bench.peers_render import write_plot

    out = tmp_path / "plot.png"
    write_plot(canned, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_from_jsonl_rerenders_without_running(canned, tmp_path: Path, capsys) -> None:
    saved = tmp_path / "run.jsonl"
    saved.write_text("some log line\n" + "\n".join(json.dumps(x) for x in canned) + "\n")
    assert read_lines(saved) == canned
    table = tmp_path / "table.md"
    assert main(["bench", "peers", "--from-jsonl", str(saved), "--table", str(table)]) == 0
    assert table.read_text() == table_markdown(canned)
    assert capsys.readouterr().out == ""  # nothing ran
    empty = tmp_path / "empty.jsonl"
    empty.write_text("no json here\n")
    with pytest.raises(ValueError, match="no `arborlm bench peers` JSON lines"):
        read_lines(empty)


def test_plot_without_matplotlib_fails_before_running_anything(monkeypatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit, match="--plot needs matplotlib"):
        main(["bench", "peers", "--plot", str(tmp_path / "p.png")])
    assert capsys.readouterr().out == ""
