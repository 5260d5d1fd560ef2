"""`arborlm serve` flags are generated from EngineConfig: every field has one, with its default,
choices and help text, and what the flags say is the EngineConfig the server runs."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from arborlm.runtime.config import EngineConfig
from arborlm.runtime.server.config_flags import config_from_args, flag_name
from arborlm.runtime.server.launch import add_serve_parser


def serve_parser() -> argparse.ArgumentParser:
    sub = argparse.ArgumentParser(prog="arborlm").add_subparsers(dest="command")
    add_serve_parser(sub)
    return sub.choices["serve"]


def actions() -> dict[str, argparse.Action]:
    return {a.dest: a for a in serve_parser()._actions}


def test_every_config_field_has_a_documented_flag_with_its_default() -> None:
    acts, defaults = actions(), EngineConfig()
    for f in dataclasses.fields(EngineConfig):
        assert f.name in acts, f"EngineConfig.{f.name} has no serve flag"
        act = acts[f.name]
        assert flag_name(f.name) in act.option_strings
        assert act.default == getattr(defaults, f.name), f.name
        assert f.metadata.get("help") and act.help == f.metadata["help"], \
            f"EngineConfig.{f.name} needs option(..., help=...): its help is the flag's documentation"


def test_no_flags_gives_the_default_config() -> None:
    args = serve_parser().parse_args([])
    assert config_from_args(args) == EngineConfig()


def test_flags_reach_the_config() -> None:
    args = serve_parser().parse_args([
        "--random-seed", "7", "--kernel-backend", "torch", "--json-whitespace", "[ ]?", "--no-jump-forward",
        "--disable-radix-cache", "--schedule-policy", "fcfs", "--max-context-len", "512", "--port", "31234"])
    cfg = config_from_args(args)
    assert (cfg.random_seed, cfg.kernel_backend, cfg.json_whitespace) == (7, "torch", "[ ]?")
    assert not cfg.jump_forward and cfg.disable_radix_cache and cfg.schedule_policy == "fcfs"
    assert cfg.max_context_len == 512 and args.port == 31234  # server options stay apart


@pytest.mark.parametrize("argv", [["--kernel-backend", "cuda-magic"], ["--schedule-policy", "random"],
                                  ["--dtype", "int3"], ["--max-total-tokens", "many"]])
def test_bad_values_are_rejected_by_the_parser(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit):
        serve_parser().parse_args(argv)
    assert "invalid" in capsys.readouterr().err


def test_choices_follow_the_policy_registry() -> None:
    from arborlm.runtime.policy import POLICIES

    assert sorted(actions()["schedule_policy"].choices) == sorted(POLICIES)
