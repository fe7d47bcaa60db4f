"""The Keras adapter on other Keras backends and under MirroredStrategy, each in a subprocess.

A Keras backend is fixed at import and TF logical devices before TF starts,
so each of these runs in a fresh interpreter with its own time limit; the
cache directories the test session uses (KERAS_HOME, XDG_CACHE_HOME) are
forwarded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADAPTER_TESTS = ROOT / "tests" / "test_keras_adapter.py"
MIRRORED = ROOT / "tests" / "keras_backends" / "mirrored_check.py"
SUITE_TIMEOUT_S = 480
MIRRORED_TIMEOUT_S = 240


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _env(backend: str) -> dict:
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env.setdefault("OMP_NUM_THREADS", "2")
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for key in ("KERAS_HOME", "XDG_CACHE_HOME"):
        if key in os.environ:
            env[key] = os.environ[key]
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(args: list, backend: str, timeout: int) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, cwd=ROOT, env=_env(backend), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(map(str, args))} (KERAS_BACKEND={backend}) ran past {timeout}s:\n"
                    f"{(exc.stdout or '')[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("backend, needs", [("torch", "torch"), ("jax", "jax")])
def test_adapter_suite_on_backend(backend, needs):
    if not _have(needs):
        pytest.skip(f"{needs} is not installed: the Keras {backend} backend is not tested")
    pytest.importorskip("keras")
    proc = _run([sys.executable, "-m", "pytest", str(ADAPTER_TESTS), "-x", "-q", "-p", "no:cacheprovider"],
                backend, SUITE_TIMEOUT_S)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"adapter tests failed under KERAS_BACKEND={backend}:\n{tail}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device():
    if not _have("tensorflow"):
        pytest.skip("tensorflow is not installed")
    pytest.importorskip("sklearn")
    proc = _run([sys.executable, str(MIRRORED)], "tensorflow", MIRRORED_TIMEOUT_S)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    fixed = report["4"]
    assert fixed["k"] == 4 and fixed["changed"], report
    assert fixed["tail"] == "diagonal" and report["auto"]["tail"] == "full", report   # tail="auto"'s choices
    for case in ("4", "auto"):
        got = report[case]
        assert got["k"] == got["k_plain"], report
        assert got["vs_direct"] < 1e-4 and got["vs_plain"] < 1e-4 and got["bias_vs_direct"] < 1e-4, report
