"""`arborlm bench serving` against the shared tiny-model server."""

from __future__ import annotations

import argparse
import json

import pytest
from server_helpers import API_KEY, ServerProc

from arborlm.runtime.bench.serving import add_serving_parser, build_dataset, run


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serving_parser(parser.add_subparsers())
    return parser.parse_args(["serving", *argv])


@pytest.mark.parametrize("dataset,extra", [
    ("random", ["--input-len", "16", "--concurrency", "4"]),
    ("shared-prefix", ["--prefix-len", "64", "--question-len", "4", "--num-groups", "2", "--request-rate", "50"]),
])
def test_bench_serving_json_line(server: ServerProc, capsys, dataset: str, extra: list[str]) -> None:
    args = _args("--base-url", server.url, "--api-key", API_KEY, "--dataset", dataset, "--num-prompts", "6",
                 "--output-len", "4", "--warmup", "1", *extra)
    assert run(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["completed"] == 6 and line["errors"] == 0, line
    assert line["total_output_tokens"] == 24 and line["output_token_throughput"] > 0
    for k in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(line[k]) == {"mean", "p50", "p90", "p99"}
    if dataset == "shared-prefix":
        assert line["cached_token_share"] > 0.3  # the system prompts are served from the radix cache


def test_mt_bench_dataset_two_turns(shared_data) -> None:
    convs = build_dataset(_args("--dataset", "mt-bench", "--num-prompts", "3"))
    assert len(convs) == 3 and all(len(c.turns) == 2 for c in convs)


def test_bench_counts_errors(server: ServerProc, capsys) -> None:
    args = _args("--base-url", server.url, "--api-key", "wrong", "--num-prompts", "2", "--warmup", "0",
                 "--model", "m", "--input-len", "4", "--output-len", "2")
    run(args)
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["errors"] == 2 and "401" in line["error_samples"][0]
