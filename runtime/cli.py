"""`arborlm` command line. Subcommands live beside what they run and register themselves here:
each entry of COMMANDS is "module:function" where function(subparsers) adds its parser and sets
`func`. Modules are imported only when listed, so `arborlm --help` stays cheap."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, str] = {
    "prepare": "arborlm.runtime.cli_basic:add_prepare_parser",
    "demo": "arborlm.runtime.cli_basic:add_demo_parser",
    "serve": "arborlm.runtime.server.launch:add_serve_parser",
    "bench": "arborlm.runtime.bench:add_bench_parser",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arborlm", description="arborlm structured-generation runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    for target in COMMANDS.values():
        module_name, func_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:  # a part not built yet must not break the others
            if not (e.name or "").startswith("arborlm"):
                raise
            continue
        getattr(module, func_name)(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
