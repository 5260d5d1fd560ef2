"""`arborlm bench peers`: system "arborlm-program", the frontend language. A workload whose inputs
carry a program form (`GenInputs.program`: few-shot GSM8K, the ReAct replay) runs `run_batch` of
that `@al.program` on the same engine as the raw `Engine.generate` line "arborlm", so the ratio
between the two lines is the cost of the language over the raw engine.

The program makes exactly the workload's prompts (tests check it), greedy, with the workload's
`max_new_tokens` as the run-level default. Its token accounting is the program's own: every backend
call counts, including the prefix sends (`cache_prefix` of run_batch's constant prefix and of each
`fork`), so its prompt and cached token counts are larger than the raw line's.
"""

from __future__ import annotations

import time
from typing import Any

from arborlm.runtime.bench.peers_inputs import GenInputs
from arborlm.runtime.bench.peers_report import RunMeasurement
from arborlm.runtime.bench.peers_systems import PeerContext


def generated_texts(states: list[Any]) -> list[str]:
    """The outputs of every program's gens, program by program, each in the order it set them (a
    variable that a join made a list contributes its items)."""
    texts: list[str] = []
    for state in states:
        for value in state.variables().values():
            texts.extend(value if isinstance(value, list) else [value])
    return texts


def run_batch(ctx: PeerContext, inputs: GenInputs) -> RunMeasurement:
    """Every program at once (one thread each, as the raw line sends every prompt at once); the
    engine loop batches their gens into shared scheduler steps."""
    if inputs.program is None:
        raise ValueError("this workload has no frontend-language program")
    backend = ctx.program_backend
    items = inputs.program.items
    defaults: dict[str, Any] = {"temperature": 0.0, "max_new_tokens": inputs.max_new_tokens}
    if inputs.ignore_eos:
        defaults["ignore_eos"] = True
    backend.flush_cache()
    t0 = time.perf_counter()
    states = inputs.program.program.run_batch(items, backend=backend, num_threads=max(1, len(items)), **defaults)
    wall_s = time.perf_counter() - t0
    if states.failed:
        first = states[states.failed[0]].error()
        raise RuntimeError(f"{len(states.failed)} of {len(states)} programs failed; first: {first!r}")
    return RunMeasurement(
        wall_s=wall_s, output_tokens=sum(s.meta().completion_tokens for s in states),
        prompt_tokens=states.prompt_tokens, cached_tokens=states.cached_tokens, texts=generated_texts(states),
        notes={"num_programs": len(states)})
