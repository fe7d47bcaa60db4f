"""The README's examples print what the README shows.

- Every ``python`` block of README.md runs in a fresh interpreter in an empty folder, and its
  stdout is the bare code block that follows it (where the text between says the framework's own
  lines are "left out", the shown lines are the last lines of stdout). It leaves no file behind.
- The ``lip-onnx`` sessions (``$ command`` lines in ``text`` blocks) of README.md and
  docs/CLI.md run in the order shown, each document in its own empty folder, and print what is
  shown (timings aside).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
CLI_DOC = os.path.join(ROOT, "docs", "CLI.md")
_TIME = re.compile(r"\(\d+\.\d+ s\)|done in \d+\.\d+ s")
# PyTorch and MKL pick their CPU kernels by the instruction set (AVX2, AVX-512): training that memorizes
# noise amplifies their last-bit differences, so the examples pin AVX2 to print the same figures on any x86 CPU
_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0", ATEN_CPU_CAPABILITY="avx2",
            MKL_ENABLE_INSTRUCTIONS="AVX2")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def python_examples(text: str) -> list[tuple[str, str, list[str], bool]]:
    """``(heading, code, shown output lines, tail_only)`` for each ``python`` block of ``text``."""
    examples = []
    for m in re.finditer(r"```python\n(.*?)```\n(.*?)```\n(.*?)```", text, re.S):
        code, between, shown = m.group(1), m.group(2), m.group(3)
        if between.lstrip().startswith(("python", "text", "bash")) or "```" in between:
            raise AssertionError(f"a python block of the README has no output block after it:\n{code[:200]}")
        heading = re.findall(r"^#+ (.+)$", text[:m.start()], re.M)[-1]
        examples.append((heading, code, shown.rstrip("\n").splitlines(), "left out" in between))
    return examples


def _missing_modules(code: str) -> list[str]:
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


_EXAMPLES = python_examples(_read(README))


def test_the_readme_has_one_python_quick_start_per_face():
    headings = [h for h, *_ in _EXAMPLES]
    # the core has a second example: the label-aware repair (beyond the paper)
    assert headings == ["Core", "Which labels are wrong (beyond the paper)", "PyTorch", "Keras", "scikit-learn",
                        "Hugging Face Transformers", "Lightning"]


def test_readme_examples_use_no_deprecated_spelling_and_no_repo_only_package():
    for heading, code, _, _ in _EXAMPLES:
        tree = ast.parse(code)
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m.split(".")[0] == "experiments" for m in modules), heading  # not installed
        keywords = {kw.arg for n in ast.walk(tree) if isinstance(n, ast.Call) for kw in n.keywords}
        assert not keywords & {"k", "fit_bias", "X_val", "Y_val"}, heading
        keys = [n.slice.value for n in ast.walk(tree) if isinstance(n, ast.Subscript)
                and isinstance(n.slice, ast.Constant)]
        assert "k" not in keys, heading
    text = _read(README)
    assert "never rewritten" not in text and "40 % symmetric" not in text


@pytest.mark.parametrize("heading,code,shown,tail_only", _EXAMPLES, ids=[e[0] for e in _EXAMPLES])
def test_readme_python_example_prints_what_the_readme_shows(tmp_path, heading, code, shown, tail_only):
    missing = _missing_modules(code)
    if missing:
        pytest.skip(f"the {heading} example needs {', '.join(missing)}")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=_ENV,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = r.stdout.rstrip("\n").splitlines()
    if tail_only:
        got = got[-len(shown):]
    assert got == shown, f"{heading}: stdout\n" + r.stdout
    assert os.listdir(tmp_path) == [], f"the {heading} example left files behind: {os.listdir(tmp_path)}"


def sessions(text: str) -> list[tuple[str, list[str]]]:
    """``(command, shown lines)`` for every ``$ `` line of the ``text`` blocks."""
    runs: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```text\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                runs.append((line[2:], []))
            elif runs:
                runs[-1][1].append(line)
    return runs


def _argv(command: str) -> list[str]:
    command = re.sub(r"\s+#.*$", "", command) if not command.startswith("python -c") else command
    argv = shlex.split(command)
    if argv[0] == "lip-onnx":
        return [sys.executable, "-m", "lip_agnostic.tools", *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"the docs run an unexpected program: {command}")


@pytest.mark.parametrize("doc,least", [(README, 3), (CLI_DOC, 9)], ids=["README", "docs-CLI"])
def test_lip_onnx_sessions_print_what_the_docs_show(tmp_path, doc, least):
    pytest.importorskip("onnxruntime")
    runs = sessions(_read(doc))
    assert len(runs) >= least
    assert "lip-onnx demo --save-inputs ." in [c for c, _ in runs[:3]]
    for command, shown in runs:
        r = subprocess.run(_argv(command), capture_output=True, text=True, cwd=tmp_path, env=_ENV, timeout=300)
        got = (r.stdout + r.stderr).rstrip("\n").splitlines()
        assert "Traceback" not in r.stderr, r.stderr
        assert [_TIME.sub("(T)", s) for s in got] == [_TIME.sub("(T)", s) for s in shown], command
