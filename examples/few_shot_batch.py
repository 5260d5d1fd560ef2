"""A batch of few-shot GSM8K questions through `run_batch`: the shared few-shot prefix is found by
tracing the program, sent once, and every item hits it in the radix cache.

    python examples/few_shot_batch.py --num-questions 8
"""

from __future__ import annotations

import argparse

import arborlm as al
from arborlm.runtime.data import read_jsonl, workload


def few_shot_prompt(num_shots: int) -> str:
    rows = read_jsonl(workload("gsm8k_train.jsonl"))[:num_shots]
    return "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in rows)


def make_program(prefix: str):
    @al.program
    def gsm8k(s, question):
        s += prefix
        s += "Question: " + question + "\nAnswer:"
        s += al.gen("answer", max_tokens=48, stop="Question:")

    return gsm8k


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-questions", type=int, default=8)
    parser.add_argument("--num-shots", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    al.set_default_backend(al.Engine(model="smollm2"))
    program = make_program(few_shot_prompt(args.num_shots))
    questions = read_jsonl(workload("gsm8k_test.jsonl"))[:args.num_questions]
    states = program.run_batch([{"question": q["question"]} for q in questions], num_threads="auto",
                               progress_bar=True, temperature=0, max_new_tokens=args.max_tokens)
    for q, st in zip(questions, states):
        print(f"- {q['question'][:60]}... -> {st['answer'].strip()[:60]!r}")
    print(f"prefix tokens sent once: {states.prefix_tokens}; cached share: {states.cached_share:.2f}; "
          f"failed: {states.failed}")


if __name__ == "__main__":
    main()
