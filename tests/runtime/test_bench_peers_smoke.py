"""`arborlm bench peers` end to end on the tiny model with tiny sizes, the optional peers made absent
(llama.cpp, outlines): every workload prints one line per system, measured or skipped with the
reason; transformers (fp32) writes exactly arborlm's greedy text; the chat workload goes through a
real `arborlm serve` subprocess."""

from __future__ import annotations

import json
import socket
import statistics
import sys

import pytest

from arborlm.runtime.cli import main


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no two free consecutive ports")


@pytest.fixture(scope="module")
def peer_lines(tiny_model_path: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("peers")
    mp = pytest.MonkeyPatch()
    mp.setitem(sys.modules, "outlines", None)  # find_spec / import: not installed
    mp.setitem(sys.modules, "llama_cpp", None)
    try:
        rc = main(["bench", "peers", "--model", tiny_model_path, "--dtype", "float32", "--threads", "2",
                   "--repeats", "2", "--workloads", "few-shot,chat-c1,latency,json,batched-decode,react",
                   "--num-few-shot", "2", "--few-shot-max-new-tokens", "8", "--num-chat", "1", "--chat-max-new-tokens", "4", "--latency-max-new-tokens", "8",
                   "--num-json", "2", "--json-max-new-tokens", "24", "--num-batched", "3", "--batched-max-new-tokens", "6", "--num-react", "1", "--react-max-new-tokens", "8",
                   "--max-total-tokens", "16384", "--port-base", str(_free_port_pair()), "--log-dir", str(out),
                   "--jsonl", str(out / "lines.jsonl"), "--table", str(out / "table.md")])
    finally:
        mp.undo()
    assert rc == 0
    lines = [json.loads(x) for x in (out / "lines.jsonl").read_text().splitlines()]
    lines[0]["table"] = (out / "table.md").read_text()
    return lines


def _line(lines: list[dict], workload: str, system: str) -> dict:
    found = [ln for ln in lines if ln.get("workload") == workload and ln["system"] == system]
    assert len(found) == 1, f"{workload}/{system}: {len(found)} lines"
    return found[0]


def test_one_line_per_workload_and_system(peer_lines: list[dict]) -> None:
    header, results = peer_lines[0], peer_lines[1:]
    assert header["kind"] == "run" and header["dtype"] == "float32" and header["threads"] == 2
    assert header["command"].startswith("arborlm bench peers --workloads few-shot,chat-c1,")
    assert [(r["workload"], r["system"]) for r in results] == [
        ("few-shot", "arborlm"), ("few-shot", "arborlm-program"), ("few-shot", "transformers"),
        ("few-shot", "llama.cpp"),
        ("chat-c1", "arborlm"), ("chat-c1", "llama.cpp"),
        ("latency", "arborlm"), ("latency", "transformers"), ("latency", "llama.cpp"),
        ("json", "arborlm"), ("json", "llama.cpp"), ("json", "outlines"),
        ("batched-decode", "arborlm"), ("batched-decode", "transformers"), ("batched-decode", "llama.cpp"),
        ("react", "arborlm"), ("react", "arborlm-program"), ("react", "llama.cpp")]
    for r in results:
        if r["system"] in ("llama.cpp", "outlines"):
            assert r["skipped"] is True and "not installed" in r["reason"] and "ratios" not in r
            continue
        assert "skipped" not in r, r
        assert r["repeats"] == 2 and len(r["runs_s"]) == 2
        assert r["wall_s"] == pytest.approx(statistics.median(r["runs_s"]), abs=0.002)
        assert r["output_tokens"] > 0 and r["output_tok_s"] > 0
    assert "| json | outlines | skipped: outlines is not installed" in header["table"]


def test_transformers_writes_arborlms_greedy_text_in_fp32(peer_lines: list[dict]) -> None:
    for workload in ("few-shot", "latency", "batched-decode"):
        hf = _line(peer_lines, workload, "transformers")
        assert hf["same_text_share_vs_arborlm"] == 1.0, workload
        ours = _line(peer_lines, workload, "arborlm")
        assert set(ours["ratios"]) == ({"transformers", "arborlm-program"} if workload == "few-shot" else {"transformers"})
        assert ours["ratios"]["transformers"]["wall_s"] == pytest.approx(hf["wall_s"] / ours["wall_s"], rel=0.05)


def test_workload_specific_numbers(peer_lines: list[dict]) -> None:
    few = _line(peer_lines, "few-shot", "arborlm")
    assert few["num_prompts"] == 2 and 0.0 <= few["accuracy"] <= 1.0
    assert few["cached_token_share"] > 0.4  # the second question reuses the 8-shot prefix
    batched = _line(peer_lines, "batched-decode", "arborlm")
    assert batched["output_tokens"] == 3 * 6 == _line(peer_lines, "batched-decode", "transformers")["output_tokens"]
    for system in ("arborlm", "transformers"):
        lat = _line(peer_lines, "latency", system)
        assert lat["output_tokens"] == 8 and lat["ttft_ms"] > 0 and lat["decode_tok_s"] > 0
    card = _line(peer_lines, "json", "arborlm")
    assert card["num_prompts"] == 2 and 0.0 <= card["valid_share"] <= 1.0
    react = _line(peer_lines, "react", "arborlm")
    assert react["num_trajectories"] == 1 and react["num_steps"] >= 2
    assert react["cached_token_share"] > 0.3  # every step after the first extends a cached trace
    chat = _line(peer_lines, "chat-c1", "arborlm")
    assert chat["num_conversations"] == 1 and chat["num_requests"] == 2 and chat["concurrency"] == 1
    assert chat["ttft_p50_ms"] > 0 and chat["itl_p50_ms"] >= 0 and chat["output_tokens"] > 0
    assert chat["cached_token_share"] > 0  # the second turn extends the first


def test_program_writes_the_raw_engines_greedy_text(peer_lines: list[dict]) -> None:
    """run_batch of the frontend program over the same prompts: the same greedy text in fp32 (its
    prefix sends and fork extends hit the cache), and its cost against the raw engine as a ratio."""
    for workload in ("few-shot", "react"):
        program, raw = _line(peer_lines, workload, "arborlm-program"), _line(peer_lines, workload, "arborlm")
        assert program["same_text_share_vs_arborlm"] == 1.0, workload
        assert program["api"] == "run_batch of an @al.program" and raw["api"] == "Engine.generate"
        assert program["output_tokens"] == raw["output_tokens"] > 0
        assert program["ratios"]["arborlm"]["wall_s"] == pytest.approx(raw["wall_s"] / program["wall_s"], rel=0.05)
        assert program["cached_token_share"] > raw["cached_token_share"] > 0  # plus its prefix sends
    assert _line(peer_lines, "few-shot", "arborlm-program")["accuracy"] == _line(peer_lines, "few-shot", "arborlm")["accuracy"]
    assert _line(peer_lines, "react", "arborlm-program")["num_programs"] == 1
