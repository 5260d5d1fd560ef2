"""Tree of thought with fork/join: several branches propose an idea each (concurrently, sharing the
prefix through the radix cache), the parent then picks one with `select`.

    python examples/tree_of_thought.py
"""

from __future__ import annotations

import arborlm as al


@al.program
def tree_of_thought(s, problem, num_branches=3):
    s += f"Problem: {problem}\nLet us consider different approaches.\n"
    forks = s.fork(num_branches)
    for i, f in enumerate(forks):
        f += f"Approach {i + 1}:" + al.gen("idea", max_tokens=16, stop="\n")
    forks.join()  # s["idea"] is now a list with one idea per branch
    for i, idea in enumerate(s["idea"]):
        s += f"Approach {i + 1}:{idea}\n"
    s += "The most promising approach is Approach"
    s += al.select("best", [f" {i + 1}" for i in range(num_branches)])


def main() -> None:
    al.set_default_backend(al.Engine(model="smollm2"))
    state = tree_of_thought.run(problem="How can a small town reduce traffic jams?", temperature=0.7, seed=1)
    for i, idea in enumerate(state["idea"]):
        print(f"idea {i + 1}:{idea}")
    print("best approach:", state["best"].strip(), "scores:", [round(x, 3) for x in state.meta("best").scores])
    print("meta:", state.meta())


if __name__ == "__main__":
    main()
