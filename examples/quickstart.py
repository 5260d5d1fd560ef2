"""Quickstart: a chat program, one run and a small batch on the in-process engine.

    python examples/quickstart.py
"""

from __future__ import annotations

import arborlm as al


@al.program
def qa(s, question):
    s += al.system("You are a concise assistant.")
    s += al.user(question)
    s += al.assistant(al.gen("answer", max_tokens=64, stop="\n"))


def main() -> None:
    al.set_default_backend(al.Engine(model="smollm2"))
    state = qa.run(question="What is the capital of France? Answer in one sentence.", temperature=0)
    print("answer:", state["answer"])
    print("messages:", state.messages())
    print("meta:", state.meta())

    questions = ["What is the capital of Japan?", "Name a primary color.", "What is 2 + 2?"]
    states = qa.run_batch([{"question": q} for q in questions], num_threads="auto", progress_bar=True,
                          temperature=0)
    for q, st in zip(questions, states):
        print(f"{q} -> {st['answer']}")
    print(f"batch cached share: {states.cached_share:.2f}")


if __name__ == "__main__":
    main()
