"""``lip-onnx`` conventions: ``--version``/``-h`` start without importing onnx or onnxruntime, and
``denoise --exit-code`` tells scripts "unchanged" from the exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lip_agnostic.tools.errors import EXIT_CODES, UNCHANGED_EXIT

_HEAVY = ("onnx", "onnxruntime", "tqdm", "torch", "tensorflow", "jax", "matplotlib")

# Runs the CLI's entry point the way the console script does, then lists the heavy modules it loaded.
_PROBE = """
import json, sys
from lip_agnostic.tools.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (_HEAVY,)


def _probe(*argv: str) -> tuple[dict, str]:
    r = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    return json.loads(r.stderr.strip().splitlines()[-1]), r.stdout


@pytest.mark.parametrize("argv", [("--version",), ("-h",), ("denoise", "-h"), ("inspect", "-h"),
                                  ("compare", "-h"), ("demo", "-h")])
def test_version_and_help_import_no_heavy_module(argv):
    info, out = _probe(*argv)
    assert info["code"] == 0
    assert info["heavy"] == [], f"lip-onnx {' '.join(argv)} imported {info['heavy']}"
    assert out.strip(), "nothing printed"


def test_version_names_the_package_version():
    import lip_agnostic
    info, out = _probe("--version")
    assert out.strip() == f"lip-onnx (lip-agnostic) {lip_agnostic.__version__}"


def test_the_python_api_still_loads_lazily():
    import lip_agnostic.tools as tools
    from lip_agnostic.tools import api
    for name in tools.__all__:
        assert getattr(tools, name) is getattr(api, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tools.nope  # noqa: B018


def test_exit_code_is_documented_in_help_and_table():
    _, out = _probe("denoise", "-h")
    assert "--exit-code" in out and f"exit {UNCHANGED_EXIT} " in " ".join(out.split())
    assert UNCHANGED_EXIT in EXIT_CODES and UNCHANGED_EXIT not in (0, 1, 2, 130)
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md"),
                  encoding="utf-8").read()
    assert f"| {UNCHANGED_EXIT} |" in readme and "--exit-code" in readme


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from lip_agnostic.tools import demo
    return demo.save_inputs(str(tmp_path_factory.mktemp("demo")))


def _denoise(tmp_path, files, *extra):
    from lip_agnostic.tools.cli import main
    out = str(tmp_path / "out.onnx")
    report = str(tmp_path / "report.json")
    code = main(["denoise", files["model"], "--calib", files["calib"], "-o", out, "--report", report, "-q", *extra])
    with open(report, encoding="utf-8") as fh:
        return code, json.load(fh), os.path.exists(out)


@pytest.mark.parametrize("tail", ["diagonal", "auto"])
def test_exit_code_flag_reports_unchanged_and_writes_the_output(tmp_path, demo_files, tail):
    code, report, written = _denoise(tmp_path, demo_files, "--tail", tail, "--exit-code")
    assert written
    unchanged = report["outcome"].startswith("unchanged")
    assert unchanged == (not report["rank"]["changed"])
    assert code == (UNCHANGED_EXIT if unchanged else 0)


def test_both_outcomes_occur_on_the_demo(tmp_path, demo_files):
    # The parametrized test above must see each branch: the paper's refit keeps the demo model,
    # the default (full-tail search) changes it.
    codes = {}
    for tail in ("diagonal", "auto"):
        (tmp_path / tail).mkdir()
        codes[tail] = _denoise(tmp_path / tail, demo_files, "--tail", tail, "--exit-code")[0]
    assert codes == {"diagonal": UNCHANGED_EXIT, "auto": 0}


def test_without_the_flag_unchanged_exits_zero(tmp_path, demo_files):
    code, report, written = _denoise(tmp_path, demo_files, "--tail", "diagonal")
    assert written and report["outcome"].startswith("unchanged") and code == 0


def test_fixed_rank_that_keeps_everything_is_unchanged(tmp_path, demo_files):
    code, report, _ = _denoise(tmp_path, demo_files, "--rank", str(10), "--tail", "diagonal", "--exit-code")
    assert report["rank"]["k"] == report["rank"]["m"] == 10
    assert code == UNCHANGED_EXIT
