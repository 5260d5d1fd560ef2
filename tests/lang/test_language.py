"""The language without a model: cheap import, IR building, gen argument mapping, the tracer,
role rendering, select scoring rules."""

from __future__ import annotations

import subprocess

import pytest

import arborlm as al
from arborlm.backends.base import CallMeta, GenResult, HFChatTemplate, SelectResult
from arborlm.ir import Gen, Role, Select, Seq, Text
from arborlm.programs import ProgramError
from arborlm.runtime.pyproc import python_code_argv
from arborlm.select_scoring import SCORERS, split_choice_tokens


def test_import_is_cheap():
    code = ("import sys, arborlm as al\n"
            "@al.program\n"
            "def f(s, q):\n"
            "    s += al.user(q) + al.assistant(al.gen('a', max_tokens=4))\n"
            "heavy = [m for m in ('torch', 'transformers', 'numpy', 'httpx') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run(python_code_argv(code), check=True, timeout=60)


def test_expressions_build_ir():
    e = "Q: " + al.gen("a", max_tokens=5, min_tokens=1, stop="\n", temperature=0)
    assert isinstance(e, Seq) and e.items[0] == Text("Q: ")
    g = e.items[1]
    assert isinstance(g, Gen) and g.param_dict == {"max_new_tokens": 5, "min_new_tokens": 1, "stop": ["\n"],
                                                   "temperature": 0}
    assert isinstance(al.gen("c", choices=["x", "y"]), Select)
    r = al.user("hi")
    assert isinstance(r, Role) and r.role == "user" and r.body == Text("hi")
    assert al.gen("n", dtype=int).param_dict["regex"]


def test_bad_builder_arguments_raise():
    with pytest.raises(TypeError, match="dtype"):
        al.gen("x", dtype=list)
    with pytest.raises(ValueError, match="method"):
        al.select("x", ["a"], method="nope")
    with pytest.raises(ValueError, match="choices"):
        al.select("x", [])
    with pytest.raises(ValueError, match="json_schema is not valid JSON"):
        al.gen("x", json_schema="{not json")
    with pytest.raises(TypeError, match="cannot add int"):
        al.gen("x") + 3


class TemplateOnly:
    """A backend that can only render roles (enough for tracing) and echoes fixed text."""

    def __init__(self, tokenizer):
        self.template = HFChatTemplate(tokenizer)
        self.prefixes: list[str] = []

    def chat_template(self):
        return self.template

    def generate(self, prompt, params, messages=None):
        return GenResult("OK", CallMeta(prompt_tokens=len(prompt), completion_tokens=1))

    def cache_prefix(self, prefix):
        self.prefixes.append(prefix)
        return CallMeta(prompt_tokens=len(prefix))

    def select(self, prefix, choices, method):
        return SelectResult(0, choices[0], CallMeta(scores=[0.0] * len(choices)))


def test_tracer_stops_at_the_first_non_constant_node(tokenizer):
    @al.program
    def qa(s, question, style="short"):
        s += al.system("Be brief.")
        s += al.user("Q: " + question)
        s += al.assistant(al.gen("answer"))

    backend = TemplateOnly(tokenizer)
    tr = qa.trace(backend=backend, question=None)
    head = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}], tokenize=False)
    assert tr.constant_prefix == head + "<|im_start|>user\nQ: "
    assert "argument 'question'" in tr.stopped_by
    kinds = [type(n).__name__ for n in tr.nodes]
    assert kinds[:3] == ["RoleBegin", "Text", "RoleEnd"]

    @al.program
    def fstring(s, x):
        s += f"Fixed text then {x} more"
        s += al.gen("y")

    assert fstring.trace(backend=backend, x=None).constant_prefix == "Fixed text then "
    assert fstring.trace(backend=backend, x="given").constant_prefix == "Fixed text then given more"


def test_run_batch_sends_the_traced_prefix(tokenizer):
    @al.program
    def p(s, x):
        s += "A long constant instruction. " * 3 + x + al.gen("y")

    backend = TemplateOnly(tokenizer)
    states = p.run_batch([{"x": "1"}, {"x": "2"}], backend=backend)
    assert backend.prefixes == ["A long constant instruction. " * 3]
    assert [s["y"] for s in states] == ["OK", "OK"]


def test_run_level_defaults_fill_gaps_and_unknown_arguments_raise(tokenizer):
    seen = []

    class Recording(TemplateOnly):
        def generate(self, prompt, params, messages=None):
            seen.append(params)
            return super().generate(prompt, params, messages)

    @al.program
    def p(s):
        s += "x" + al.gen("a", temperature=0.5) + al.gen("b")

    p.run(backend=Recording(tokenizer), temperature=0, max_new_tokens=7)
    assert seen == [{"temperature": 0.5, "max_new_tokens": 7}, {"temperature": 0, "max_new_tokens": 7}]
    with pytest.raises(TypeError, match="unexpected argument 'tempreature'"):
        p.run(backend=Recording(tokenizer), tempreature=0)


def test_no_backend_is_a_clear_error():
    al.set_default_backend(None)

    @al.program
    def p(s):
        s += "x"

    with pytest.raises(RuntimeError, match="set_default_backend"):
        p.run()


def test_concat_join_without_a_model(tokenizer):
    @al.program
    def p(s):
        s += "start:"
        forks = s.fork(3)
        for i, f in enumerate(forks):
            f += f" [{i}]" + al.gen("g")
        forks.join(mode="concat")
        s += " end"

    state = p.run(backend=TemplateOnly(tokenizer))
    assert state.text() == "start: [0]OK [1]OK [2]OK end"


def test_var_scope_captures_text(tokenizer):
    @al.program
    def p(s):
        s += "a"
        with s.var_scope("inner"):
            s += "b" + al.gen("g") + "c"
        s += "d"

    state = p.run(backend=TemplateOnly(tokenizer))
    assert state["inner"] == "bOKc" and state["g"] == "OK" and state.text() == "abOKcd"


def test_error_inside_a_program_is_kept_and_named(tokenizer):
    @al.program
    def boom(s):
        s += "x"
        raise KeyError("missing")

    with pytest.raises(ProgramError, match="program 'boom' failed: KeyError") as info:
        boom.run(backend=TemplateOnly(tokenizer))
    assert isinstance(info.value.__cause__, KeyError)
    state = boom.run(backend=TemplateOnly(tokenizer), stream=True).wait()
    assert isinstance(state.error(), KeyError)


def test_split_choice_tokens_and_scorers():
    vocab = {"ab": [1], "abc": [1, 2], "abd": [1, 3], "a": [4]}
    toks = split_choice_tokens(lambda t: vocab[t], "ab", ["c", "d"])
    assert toks.shared_len == 1 and toks.choice_ids(0) == [2]
    cond = [[-1.0, -5.0], [-1.0], [-2.0, 0.0]]
    assert SCORERS["token_length_normalized"](cond, None) == (1, [-3.0, -1.0, -1.0])  # first on ties
    # greedy: position 0 ties between choices 0 and 1; choice 1 is padded with its mean (-1.0) > -5.0
    assert SCORERS["greedy_token"](cond, None)[0] == 1
    idx, scores = SCORERS["unconditional_likelihood_normalized"](cond, [[-2.0, -5.0], [-0.5], [-1.0, -1.0]])
    assert scores == [0.5, -0.5, 0.0] and idx == 0
    with pytest.raises(ValueError, match="needs some text before"):
        split_choice_tokens(lambda t: vocab.get(t, []), "", ["a"])
