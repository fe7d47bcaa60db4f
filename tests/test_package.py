"""Packaging facts: the core stays framework-free, examples in docstrings run."""

from __future__ import annotations

import ast
import doctest
import importlib
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORE = ROOT / "lip_agnostic"

#: Every module of the core (found, not listed, so a new one cannot be missed).
CORE_MODULES = sorted(
    "lip_agnostic." + ".".join(p.relative_to(CORE).with_suffix("").parts).removesuffix(".__init__")
    for p in CORE.rglob("*.py")
)


def test_import_pulls_in_no_framework():
    code = (
        "import sys, json, lip_agnostic\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'jax', 'onnx', 'onnxruntime', 'cupy')"
        " if m in sys.modules]\n"
        "print(json.dumps(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _imports(path: pathlib.Path, module: str) -> set[str]:
    """The core modules ``module`` imports (relative or absolute), at any depth of its code."""
    pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found |= {target} | {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_the_core_import_graph_has_no_cycle_and_no_lazy_import():
    mods = {}
    for p in CORE.rglob("*.py"):
        name = "lip_agnostic." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    graph = {m: {t for t in _imports(p, m) if t in mods and t != m and t not in packages} for m, p in mods.items()}
    state: dict = {}

    def visit(m, stack):
        state[m] = 1
        for t in graph[m]:
            assert state.get(t) != 1, "import cycle: " + " -> ".join(stack + [m, t])
            if not state.get(t):
                visit(t, stack + [m])
        state[m] = 2

    for m in graph:
        if not state.get(m):
            visit(m, [])
    for m, p in mods.items():  # imports inside functions hide cycles: there are none
        tree = ast.parse(p.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not any(getattr(n, "level", 0) or (getattr(n, "module", "") or "").startswith("lip_agnostic")
                               for n in inner), f"lazy core import in {m}.{fn.name}"


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
