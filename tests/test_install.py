"""The install and the processes we start never put the checkout root on sys.path (issue 19).

Our top-level `kernels/` folder is `arborlm.kernels`, reached through the package mapping. With the
root on sys.path it shadows the hub `kernels` distribution, which transformers >= 5.25 imports at
start-up (`from kernels import CUDAProperties`): every model load then failed from a fresh clone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from arborlm.runtime.bench.provenance import PACKAGES, emit
from arborlm.runtime.cpu_info import KERNEL_FLAGS
from arborlm.runtime.pyproc import python_code_argv, python_module_argv

REPO = Path(__file__).resolve().parent.parent
OUR_KERNELS = str(REPO / "kernels")


@pytest.fixture
def hub_kernels(tmp_path: Path) -> dict[str, str]:
    """An environment whose PYTHONPATH holds a stand-in hub `kernels` package (marker HUB_STANDIN)."""
    pkg = tmp_path / "site" / "kernels"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("HUB_STANDIN = True\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    return {**env, "PYTHONPATH": str(tmp_path / "site")}


def _run(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


PROBE = "import kernels; print(getattr(kernels, 'HUB_STANDIN', False), kernels.__file__)"


def test_plain_python_in_the_checkout_is_shadowed(hub_kernels: dict[str, str]) -> None:
    """The hazard itself: `python -c` started in the checkout finds our folder first."""
    out = _run([sys.executable, "-c", PROBE], hub_kernels)
    assert out.startswith("False") and OUR_KERNELS in out


def test_our_child_pythons_find_the_hub_package(hub_kernels: dict[str, str]) -> None:
    out = _run(python_code_argv(PROBE), hub_kernels)
    assert out.startswith("True"), out
    out = _run(python_module_argv("arborlm.runtime.cli", "--help"), hub_kernels)
    assert "serve" in out


def test_importing_arborlm_drops_the_checkout_root(hub_kernels: dict[str, str]) -> None:
    """Started without -P in the checkout: `import arborlm` removes the root before transformers loads."""
    out = _run([sys.executable, "-c", "import arborlm, sys; " + PROBE + "; print(repr('') in repr(sys.path))"],
               hub_kernels)
    first, last = out.splitlines()
    assert first.startswith("True"), out
    assert last == "False"


def test_transformers_and_our_model_import_from_the_checkout() -> None:
    """With whatever `kernels` distribution this environment has (the lock installs the real one)."""
    code = ("import transformers.activations, importlib.util; "
            "from arborlm.runtime.models import llama; "
            "spec = importlib.util.find_spec('kernels'); print(spec.origin if spec else None)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    out = _run(python_code_argv(code), env)
    assert OUR_KERNELS not in out


def test_no_child_python_bypasses_pyproc() -> None:
    """Every `sys.executable, "-m"/"-c"` launch in our code and tests goes through runtime/pyproc.py."""
    bad = []
    for folder in ("lang", "runtime", "constrain", "kernels", "tests", "examples"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name != "test_install.py" and re.search(r"sys\.executable,\s*\"-[mc]\"", path.read_text()):
                bad.append(str(path.relative_to(REPO)))
    assert bad == []


def test_makefile_runs_python_safe_path() -> None:
    text = (REPO / "Makefile").read_text()
    assert re.search(r"^export PYTHONSAFEPATH := 1$", text, re.M)
    for line in re.findall(r"^\t.*\$\(BIN\)/python -m .*$", text, re.M):
        assert " -m pip " in line, f"Makefile runs Python without -P: {line.strip()}"


def test_bench_lines_carry_provenance(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    emit({"bench": "probe", "value": 1})
    line = json.loads(capsys.readouterr().out)
    assert line["bench"] == "probe" and line["value"] == 1
    env = line["env"]
    assert env["versions"]["torch"] == torch.__version__
    assert set(env["versions"]) == set(PACKAGES)
    assert set(env["cpu_flags"]) <= set(KERNEL_FLAGS)
    for path in (REPO / "runtime" / "bench").glob("*.py"):
        assert "print(json.dumps(" not in path.read_text(), f"{path.name} prints a bench line without emit()"
