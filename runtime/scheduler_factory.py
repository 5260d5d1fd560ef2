"""Builds a Scheduler and its collaborators from an EngineConfig: loads the model, its runner, the
grammar-aware sampler and (when the constrain package is available) the grammar compiler. Kept
apart so that scheduler.py imports no torch."""

from __future__ import annotations

from typing import Any

from arborlm.runtime.config import EngineConfig


def build_scheduler(cls: Any, config: EngineConfig) -> Any:
    from arborlm.runtime.grammar_mask import GrammarSampler
    from arborlm.runtime.model_loader import eos_token_ids, load_model
    from arborlm.runtime.model_runner import ModelRunner

    loaded = load_model(config)
    config = config.replace(dtype=str(loaded.dtype).removeprefix("torch."))
    runner = ModelRunner(config, loaded)
    eos = eos_token_ids(loaded.hf_config, loaded.tokenizer)
    compiler = None
    try:
        from arborlm.constrain import GrammarCompiler
    except ImportError:  # constrained decoding not available: requests asking for it get an error
        GrammarCompiler = None  # noqa: N806
    if GrammarCompiler is not None:
        compiler = GrammarCompiler(loaded.tokenizer, num_threads=config.grammar_compile_threads,
                                   whitespace_pattern=config.json_whitespace, backend=config.grammar_backend,
                                   number_digits=config.json_number_digits)
    sample_fn = GrammarSampler(runner.vocab_size, eos, config.device, config.random_seed)
    sched = cls(config, runner, sample_fn, loaded.tokenizer, eos, compiler)
    sched.model_path = loaded.path
    return sched
