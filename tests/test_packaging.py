"""The wheel ships the package, its data and the entry point, and no test helper.

``.ci/run`` builds the wheel once and passes it as ``LIP_WHEEL``; run alone, the test builds one
(needs ``build``; skipped without it)."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    path = os.environ.get("LIP_WHEEL")
    if path:
        return path
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), ROOT],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"could not build the wheel here: {r.stdout[-500:]}{r.stderr[-500:]}")
    return glob.glob(str(out / "*.whl"))[0]


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/")[0] for n in names}
    assert "lip_agnostic" in packages and all(p.endswith(".dist-info") for p in packages - {"lip_agnostic"})
    for needed in ("lip_agnostic/py.typed", "lip_agnostic/tools/cli.py", "lip_agnostic/adapters/torch.py",
                   "lip_agnostic/tools/data/demo_digits.onnx", "lip_agnostic/tools/data/demo_digits_calib.npz",
                   "lip_agnostic/tools/data/demo_digits_test.npz"):
        assert needed in names
    shipped = [n for n in names if "test" in n.rsplit("/", 1)[-1].lower() and not n.endswith("demo_digits_test.npz")]
    assert shipped == [], f"test helpers in the wheel: {shipped}"
    assert not any(n.startswith(("tests/", "experiments/", "benchmarks/")) for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "Provides-Extra: onnx" in meta and "onnxscript" in meta
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/entry_points.txt"))).decode()
    assert "lip-onnx = lip_agnostic.tools.cli:main" in entry
