"""Packaging facts: the core stays framework-free, examples in docstrings run."""

from __future__ import annotations

import doctest
import importlib
import json
import subprocess
import sys

import pytest

CORE_MODULES = [
    "lip_agnostic._arrays", "lip_agnostic.principal", "lip_agnostic.accumulator", "lip_agnostic.rank",
    "lip_agnostic.refine", "lip_agnostic.stream", "lip_agnostic.metrics", "lip_agnostic.report",
    "lip_agnostic.lowrank", "lip_agnostic.noise", "lip_agnostic.full_tail", "lip_agnostic.errors",
    "lip_agnostic.options",
]


def test_import_pulls_in_no_framework():
    code = (
        "import sys, json, lip_agnostic\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'jax', 'onnx', 'onnxruntime', 'cupy')"
        " if m in sys.modules]\n"
        "print(json.dumps(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_public_api_is_exported():
    import lip_agnostic

    for name in ("project_principal", "lip_refine", "LIPAccumulator", "select_rank", "principal_angles",
                 "subspace_similarity", "grassmann_distance", "singular_spectrum", "effective_rank",
                 "stable_rank", "davis_kahan_bound", "refine_batches"):
        assert name in lip_agnostic.__all__ and callable(getattr(lip_agnostic, name))


def test_adapters_and_tools_live_under_one_import_root(tmp_path):
    # Run outside the checkout, so only what the installation put on sys.path is found.
    # (Another distribution may own a top-level 'tools'; it just must not be ours.)
    code = (
        "import importlib.util as u, json, os, lip_agnostic as c, lip_agnostic.adapters as a, lip_agnostic.tools as t\n"
        "root = os.path.dirname(os.path.dirname(os.path.abspath(c.__file__)))\n"
        "def ours(name):\n"
        "    spec = u.find_spec(name)\n"
        "    locs = list(spec.submodule_search_locations or []) if spec else []\n"
        "    return any(os.path.abspath(p) == os.path.join(root, name) for p in locs)\n"
        "print(json.dumps([a.__name__, t.__name__, not ours('adapters'), not ours('tools')]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         check=True, cwd=tmp_path)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["lip_agnostic.adapters", "lip_agnostic.tools", True, True]


def test_the_wheel_has_one_import_root(tmp_path):
    import pathlib
    import zipfile

    root = pathlib.Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("lip_agnostic-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"lip_agnostic"}
    for sub in ("lip_agnostic/adapters/__init__.py", "lip_agnostic/tools/__init__.py", "lip_agnostic/py.typed",
                "lip_agnostic/tools/data/demo_digits.onnx", "lip_agnostic/tools/data/demo_digits_calib.npz",
                "lip_agnostic/tools/data/make_demo.py"):
        assert sub in names


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples_run(name):
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
