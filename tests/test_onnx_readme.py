"""The README's ``lip-onnx`` examples, run in the README's order in an empty folder, print what the
README shows (timings aside): the demo files come from ``lip-onnx demo --save-inputs .``."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
_TIME = re.compile(r"\(\d+\.\d+ s\)|done in \d+\.\d+ s")


def _sessions() -> list[tuple[str, list[str]]]:
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## lip-onnx\n"):]
    section = section[:section.index("\n## ", 5)]
    runs: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```text\n(.*?)```", section, re.S):
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
    raise AssertionError(f"README runs an unexpected program: {command}")


def test_readme_lip_onnx_examples_print_what_the_readme_shows(tmp_path):
    runs = _sessions()
    assert len(runs) >= 9 and runs[0][0] == "lip-onnx demo"
    assert "lip-onnx demo --save-inputs ." in [c for c, _ in runs[:3]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for command, shown in runs:
        r = subprocess.run(_argv(command), capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        got = (r.stdout + r.stderr).rstrip("\n").splitlines()
        assert "Traceback" not in r.stderr, r.stderr
        assert [_TIME.sub("(T)", s) for s in got] == [_TIME.sub("(T)", s) for s in shown], command
