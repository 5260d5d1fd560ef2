"""A ReAct agent: each turn the model writes a thought, `select`s an action among Search / Lookup /
Finish, writes its argument, and a Python tool's result is added as the observation.

    python examples/multi_turn_agent.py                 # live: a toy encyclopedia as the tool
    python examples/multi_turn_agent.py --replay 16     # replay 16 recorded HotpotQA ReAct traces

Replay (the workload of `arborlm bench programs`): the model generates each thought, then the
recorded thought / action / observation are added, so every step's prompt extends the previous one
and the radix cache serves it (the cached share printed at the end).
"""

from __future__ import annotations

import argparse
import time

import arborlm as al
from arborlm.runtime.bench.lang_programs import load_react_traces, react_few_shot, react_replay

ENCYCLOPEDIA = {
    "eiffel tower": "The Eiffel Tower is a wrought-iron tower in Paris, France, completed in 1889.",
    "paris": "Paris is the capital and largest city of France, on the river Seine.",
    "gustave eiffel": "Gustave Eiffel was a French engineer whose company built the Eiffel Tower.",
}
INSTRUCTIONS = ("Answer the question by interleaving Thought, Action and Observation steps. Actions: "
                "Search[entity] returns a paragraph, Lookup[keyword] finds the keyword in the last "
                "paragraph, Finish[answer] ends.\n"
                "Question: In which country is the Louvre?\n"
                "Thought 1: I should search the Louvre.\nAction 1: Search[Louvre]\n"
                "Observation 1: The Louvre is an art museum in Paris, France.\n"
                "Thought 2: The Louvre is in France.\nAction 2: Finish[France]\n\n")


class Tools:
    def __init__(self) -> None:
        self.page = ""

    def __call__(self, action: str, arg: str) -> str:
        if action == "Search":
            self.page = ENCYCLOPEDIA.get(arg.strip().lower(), f"Could not find {arg}.")
            return self.page
        hits = [s for s in self.page.split(". ") if arg.strip().lower() in s.lower()]
        return hits[0] if hits else f"No mention of {arg}."


@al.program
def react_agent(s, question, max_turns=3):
    tools = Tools()
    s += INSTRUCTIONS + f"Question: {question}\n"
    for i in range(1, max_turns + 1):
        s += f"Thought {i}:" + al.gen("thought", max_tokens=24, stop="\n") + "\n"
        actions = ["Search", "Lookup", "Finish"] if i > 1 else ["Search"]  # look something up first
        s += f"Action {i}: " + al.select("action", actions)
        s += "[" + al.gen("arg", max_tokens=10, stop=["]", "\n"]) + "]\n"
        if s["action"] == "Finish":
            break
        s += f"Observation {i}: {tools(s['action'], s['arg'])}\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replay", type=int, default=0, help="replay this many recorded traces (0: live agent)")
    parser.add_argument("--steps", type=int, default=4, help="steps per replayed trace")
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per generated thought in replay")
    args = parser.parse_args()
    al.set_default_backend(al.Engine(model="smollm2"))
    if not args.replay:
        state = react_agent.run(question="Who built the Eiffel Tower?", temperature=0)
        print(state.text()[len(INSTRUCTIONS):])
        print("meta:", state.meta())
        return
    traces = load_react_traces(args.replay)
    program = react_replay(react_few_shot())
    t0 = time.perf_counter()
    states = program.run_batch([{"question": q, "steps": steps[:args.steps]} for q, steps in traces],
                               progress_bar=True, temperature=0, max_new_tokens=args.max_tokens)
    wall = time.perf_counter() - t0
    print(f"replayed {len(states)} traces x {args.steps} steps in {wall:.1f}s; "
          f"cached share {states.cached_share:.2f}; failed {states.failed}")
    last = f"thought_{len(traces[0][1][:args.steps])}"  # step i's thought is the variable thought_i
    print(f"last generated thought of trace 1 ({last}):", states[0][last][0].strip()[:60])


if __name__ == "__main__":
    main()
