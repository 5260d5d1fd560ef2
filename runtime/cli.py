"""`arborlm` command line: prepare, demo, serve, bench."""

from __future__ import annotations

import argparse
import sys


def cmd_prepare(args: argparse.Namespace) -> int:
    from arborlm.runtime.model_loader import prepare_embedded

    print(prepare_embedded(args.model))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arborlm", description="arborlm structured-generation runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="convert the embedded default model into the cache (once)")
    p.add_argument("--model", default="smollm2")
    p.set_defaults(func=cmd_prepare)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
