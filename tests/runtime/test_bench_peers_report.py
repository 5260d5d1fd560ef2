"""`arborlm bench peers` data handling, on canned measurements (no model, no peers): medians,
ratios, skip lines, answer extraction and scoring, ReAct inputs, the llama.cpp loading patch."""

from __future__ import annotations

import ctypes
import types

import pytest

from arborlm.runtime.bench.peers_inputs import (
    GenInputs,
    extract_answer,
    few_shot_inputs,
    react_inputs,
    score_accuracy,
    score_json_valid,
)
from arborlm.runtime.bench.peers_report import (
    RunMeasurement,
    SystemOutcome,
    add_ratios,
    percentile_ms,
    summarize_outcome,
)


def test_summary_takes_medians_over_repeats() -> None:
    runs = [RunMeasurement(3.0, 300, prompt_tokens=100, cached_tokens=50, texts=["a"], timings={"ttft_ms": 30.0}),
            RunMeasurement(1.0, 300, prompt_tokens=100, cached_tokens=90, timings={"ttft_ms": 10.0}),
            RunMeasurement(2.0, 300, prompt_tokens=100, cached_tokens=70, timings={"ttft_ms": 50.0})]
    runs[0].notes = {"grammar_compile_s": 0.5}
    line = summarize_outcome("few-shot", SystemOutcome("arborlm", runs, info={"weights": "bfloat16"}),
                             score={"accuracy": 0.25}, extra={"num_prompts": 4})
    assert line["workload"] == "few-shot" and line["system"] == "arborlm" and line["num_prompts"] == 4
    assert line["repeats"] == 3 and line["runs_s"] == [3.0, 1.0, 2.0]
    assert line["wall_s"] == 2.0
    assert line["output_tok_s"] == 150.0  # median of 100, 300, 150 tok/s
    assert line["cached_token_share"] == 0.7
    assert line["ttft_ms"] == 30.0
    assert line["accuracy"] == 0.25 and line["weights"] == "bfloat16" and line["grammar_compile_s"] == 0.5
    assert "skipped" not in line


def test_skipped_system_gets_a_line_with_its_reason_and_no_ratios() -> None:
    skipped = summarize_outcome("json", SystemOutcome("outlines", skipped_reason="outlines is not installed"))
    assert skipped["skipped"] is True and skipped["reason"] == "outlines is not installed"
    ours = summarize_outcome("json", SystemOutcome("arborlm", [RunMeasurement(1.0, 10)]))
    lines = add_ratios([ours, skipped])
    assert "ratios" not in lines[1] and lines[0]["ratios"] == {}
    with pytest.raises(ValueError, match="no runs"):
        summarize_outcome("json", SystemOutcome("arborlm"))


def test_ratios_are_this_system_over_each_peer_with_above_one_meaning_better() -> None:
    fast = RunMeasurement(1.0, 100, timings={"ttft_ms": 50.0, "decode_tok_s": 200.0})
    slow = RunMeasurement(4.0, 100, timings={"ttft_ms": 200.0, "decode_tok_s": 50.0})
    mid = RunMeasurement(2.0, 100)
    lines = add_ratios([summarize_outcome("latency", SystemOutcome(s, [r]))
                        for s, r in (("arborlm", fast), ("llama.cpp", slow), ("transformers", mid))])
    ours, peer, hf = lines
    assert ours["ratios"]["llama.cpp"] == {"output_tok_s": 4.0, "decode_tok_s": 4.0, "wall_s": 4.0, "ttft_ms": 4.0}
    assert peer["ratios"]["arborlm"] == {"output_tok_s": 0.25, "decode_tok_s": 0.25, "wall_s": 0.25, "ttft_ms": 0.25}
    assert ours["ratios"]["transformers"] == {"output_tok_s": 2.0, "wall_s": 2.0}  # only shared metrics
    assert set(hf["ratios"]) == {"arborlm", "llama.cpp"}


def test_percentile_ms() -> None:
    assert percentile_ms([], 50) == 0.0
    assert percentile_ms([0.001 * i for i in range(1, 101)], 50) == pytest.approx(51.0)
    assert percentile_ms([0.001 * i for i in range(1, 101)], 99) == pytest.approx(99.0)


def test_extract_answer_reads_the_number_after_hashes() -> None:
    assert extract_answer("so 3 + 4 = 7\n#### 7\n\nQuestion: next") == "7"
    assert extract_answer("#### 1,234") == "1234"
    assert extract_answer("#### $-5.0") == "-5"
    assert extract_answer("#### 2.5 and #### 9") == "2.5"
    assert extract_answer("the answer is 7") is None


def test_scores() -> None:
    inputs = GenInputs(["p1", "p2"], [[1], [2]], 8, references=["7", "12"])
    assert score_accuracy(inputs, ["#### 7", "#### 13"]) == {"accuracy": 0.5}
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    json_inputs = GenInputs(["p"] * 3, [[1]] * 3, 8, json_schema=schema)
    assert score_json_valid(json_inputs, ['{"n": 1}', '{"n": 2}', '{"n": 3}']) == {"valid_share": 1.0}
    score = score_json_valid(json_inputs, ['{"n": 1}', '{"n": "x"}', '{"n": 1'])
    assert score["valid_share"] == 0.333 and score["first_invalid_reason"].startswith("schema: 'x' is not")


def test_few_shot_inputs_share_the_8_shot_prefix(tokenizer) -> None:
    inputs = few_shot_inputs(tokenizer, 3)
    assert len(inputs.prompts) == 3 and inputs.max_new_tokens == 64
    assert inputs.prompt_ids == [tokenizer.encode(p, add_special_tokens=False) for p in inputs.prompts]
    assert inputs.prompts[0].count("Question:") == 9 and inputs.prompts[0].endswith("Answer:")
    prefix = inputs.prompts[0][: inputs.prompts[0].rindex("Question:")]
    assert all(p.startswith(prefix) for p in inputs.prompts)
    assert inputs.references[0] == "18"  # gsm8k test[0]: Janet's ducks


def test_react_steps_extend_the_previous_steps_prompt(tokenizer) -> None:
    inputs = react_inputs(tokenizer, 3)
    assert len(inputs.trajectories) == 3
    assert sorted(i for t in inputs.trajectories for i in t) == list(range(len(inputs.prompts)))
    for traj in inputs.trajectories:
        for k, idx in enumerate(traj, start=1):
            assert inputs.prompts[idx].endswith(f"Thought {k}:")
            if k > 1:  # the growing trace: everything before "Thought k-1:" is kept, plus that step
                prev = inputs.prompts[traj[k - 2]]
                assert inputs.prompts[idx].startswith(prev)
                assert f"Observation {k - 1}: " in inputs.prompts[idx][len(prev):]
    assert inputs.stop == ["\nObservation"]


def _fake_native(with_field: bool) -> types.SimpleNamespace:
    fields = [("n_gpu_layers", ctypes.c_int32)] + ([("use_extra_bufts", ctypes.c_bool)] if with_field else [])
    params_type = type("Params", (ctypes.Structure,), {"_fields_": fields})

    def defaults() -> ctypes.Structure:
        p = params_type()
        if with_field:
            p.use_extra_bufts = True
        return p

    return types.SimpleNamespace(llama_model_default_params=defaults)


def test_llama_models_load_without_extra_buffer_types_only_inside_the_patch() -> None:
    from arborlm.runtime.bench.peers_llamacpp import without_extra_buffer_types

    native = _fake_native(with_field=True)
    original = native.llama_model_default_params
    with without_extra_buffer_types(native):
        assert native.llama_model_default_params().use_extra_bufts is False
    assert native.llama_model_default_params is original
    assert native.llama_model_default_params().use_extra_bufts is True
    old = _fake_native(with_field=False)  # a build without the field: left as it is
    with without_extra_buffer_types(old):
        assert not hasattr(old.llama_model_default_params(), "use_extra_bufts")


def test_llama_prefix_reuse_count_matches_its_rule() -> None:
    from arborlm.runtime.bench.peers_llamacpp import _reusable_tokens

    llm = types.SimpleNamespace(input_ids=[5, 6, 7, 8, 0, 0], n_tokens=4)
    assert _reusable_tokens(llm, [5, 6, 9, 9]) == 2
    assert _reusable_tokens(llm, [5, 6, 7, 8, 1, 2]) == 4
    assert _reusable_tokens(llm, [5, 6, 7]) == 2  # a prompt inside the held sequence: one re-evaluated
    assert _reusable_tokens(llm, [5, 6, 7, 8]) == 4  # exactly the held sequence
    assert _reusable_tokens(types.SimpleNamespace(input_ids=[], n_tokens=0), [1, 2]) == 0
