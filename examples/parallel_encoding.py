"""Parallel encoding: fork one branch per document, each branch adds its document (the branches run
concurrently and share the instruction prefix), `join(mode="concat")` appends them in order, then
one question is answered over all of them.

    python examples/parallel_encoding.py
"""

from __future__ import annotations

import arborlm as al

DOCUMENTS = [
    "Document 1: The Eiffel Tower is in Paris and was finished in 1889.",
    "Document 2: The Colosseum is in Rome and was finished in 80 AD.",
    "Document 3: The Sagrada Familia is in Barcelona and is still being built.",
]


@al.program
def parallel_encoding(s, documents, question):
    s += "Read the documents and answer the question.\n"
    forks = s.fork(len(documents))
    for f, doc in zip(forks, documents):
        with f.var_scope("summary"):
            f += doc + "\nIn short:" + al.gen(max_tokens=8, stop="\n") + "\n"
    forks.join(mode="concat")
    s += f"Question: {question}\nAnswer:" + al.gen("answer", max_tokens=16, stop="\n")


def main() -> None:
    al.set_default_backend(al.Engine(model="smollm2"))
    state = parallel_encoding.run(documents=DOCUMENTS, question="Which building was finished first?",
                                  temperature=0)
    print(state.text())
    print("answer:", state["answer"])


if __name__ == "__main__":
    main()
