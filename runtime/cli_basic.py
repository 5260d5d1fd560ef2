"""`arborlm prepare` and `arborlm demo`."""

from __future__ import annotations

import argparse


def _prepare(args: argparse.Namespace) -> int:
    from arborlm.runtime.model_loader import prepare_embedded

    print(prepare_embedded(args.model))
    return 0


def add_prepare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert the embedded default model into the cache (once)")
    p.add_argument("--model", default="smollm2")
    p.set_defaults(func=_prepare)


def _demo(args: argparse.Namespace) -> int:
    from arborlm.runtime import Engine

    engine = Engine(model=args.model, dtype=args.dtype)
    tok = engine.tokenizer
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": args.prompt}], tokenize=False, add_generation_prompt=True
    )
    print(f"model={args.model} dtype={engine.config.dtype}\n>>> {args.prompt}")
    for delta in engine.stream(prompt, {"temperature": 0.0, "max_new_tokens": args.max_new_tokens}):
        print(delta, end="", flush=True)
    print()
    engine.shutdown()
    return 0


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="a short generation with the default model")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--prompt", default="What is the capital of France? Answer in one sentence.")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.set_defaults(func=_demo)
