"""Fuzz: mutated model bytes and mutated calibration files must end in a documented exit code,
never in a traceback, with nothing left behind and the inputs unchanged."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile

import numpy as np

import onnx
import pytest

pytest.importorskip("onnxruntime")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lip_agnostic.tools import cli
from lip_agnostic.tools.errors import EXIT_CODES
from onnx_models import mlp_model

EXAMPLES = 200
_MODEL = mlp_model(layout="matmul_add", q=6, l=4, d=3)[0].SerializeToString()
_TRIED = {"inputs": 0, "codes": {}}
CALIB_EXAMPLES = 150
_TRIED_CALIB = {"inputs": 0, "codes": {}}


def _good_calib() -> dict:
    rng = np.random.default_rng(0)
    return {"x": rng.random((24, 3), dtype=np.float32), "labels": rng.integers(0, 4, 24),
            "val_x": rng.random((8, 3), dtype=np.float32), "val_labels": rng.integers(0, 4, 8)}


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


_CALIB = _npz_bytes(_good_calib())


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(_MODEL)
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "zero-run"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "splice":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=16))
    else:
        i = draw(st.integers(0, len(data) - 1))
        n = draw(st.integers(1, 32))
        data[i:i + n] = bytes(min(n, len(data) - i))
    return bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(blob=mutated())
def test_mutated_models_fail_cleanly(blob, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        with open(path, "wb") as fh:
            fh.write(blob)
        codes = [cli.main(["inspect", path]),
                 cli.main(["denoise", path, "--rank", "1", "-q", "-o", os.path.join(tmp, "out.onnx")])]
        err = capsys.readouterr().err
        for code in codes:
            assert code in EXIT_CODES and code not in (1, 130), err
            _TRIED["codes"][code] = _TRIED["codes"].get(code, 0) + 1
        assert "Traceback" not in err
        for name in os.listdir(tmp):                       # nothing partial left behind
            assert name in ("m.onnx", "out.onnx"), name
        if codes[1] == 0:
            onnx.checker.check_model(os.path.join(tmp, "out.onnx"), full_check=True)
    _TRIED["inputs"] += 1


@st.composite
def mutated_calib(draw) -> bytes:
    """A calibration file broken at the byte level (like a model) or in its content."""
    if draw(st.booleans()):
        data = bytearray(_CALIB)
        kind = draw(st.sampled_from(["flip", "truncate", "splice"]))
        if kind == "flip":
            for _ in range(draw(st.integers(1, 8))):
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            data = data[:draw(st.integers(0, len(data) - 1))]
        else:
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        return bytes(data)
    arrays = _good_calib()
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(arrays) + ["extra"]))
        how = draw(st.sampled_from(["drop", "dtype", "shape", "nan", "range", "empty", "scalar", "object", "add"]))
        a = arrays.get(key, np.zeros(3))
        if a.dtype.kind == "O" and how != "drop":
            continue
        if how == "drop":
            arrays.pop(key, None)
        elif how == "dtype":
            arrays[key] = a.astype(draw(st.sampled_from(["int8", "float16", "float64", "complex64", "U3", "bool"])))
        elif how == "shape":
            arrays[key] = np.resize(a, draw(st.lists(st.integers(0, 9), min_size=0, max_size=3)))
        elif how == "nan" and a.dtype.kind == "f" and a.size:
            a = a.copy()
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
            arrays[key] = a
        elif how == "range" and a.dtype.kind in "iu":
            arrays[key] = a + draw(st.sampled_from([-5, 4, 1000]))
        elif how == "empty" and a.ndim:
            arrays[key] = a[:0]
        elif how == "scalar":
            arrays[key] = np.asarray(7)
        elif how == "object":
            arrays[key] = np.array([{"x": 1}] * max(1, a.shape[0] if a.ndim else 1), dtype=object)
        elif how == "add":
            arrays[key] = a
    return _npz_bytes(arrays)


def _sha(folder) -> dict:
    return {n: hashlib.sha256(open(os.path.join(folder, n), "rb").read()).hexdigest() for n in sorted(os.listdir(folder))}


@settings(max_examples=CALIB_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(blob=mutated_calib(), rank=st.sampled_from(["auto", "1", "0"]))
def test_mutated_calibration_files_fail_cleanly(blob, rank, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        model, calib, out = (os.path.join(tmp, n) for n in ("m.onnx", "c.npz", "out.onnx"))
        with open(model, "wb") as fh:
            fh.write(_MODEL)
        with open(calib, "wb") as fh:
            fh.write(blob)
        before = _sha(tmp)
        code = cli.main(["denoise", model, "--calib", calib, "--rank", rank, "-q", "-o", out])
        err = capsys.readouterr().err
        assert code in EXIT_CODES and code not in (1, 130), err
        assert "Traceback" not in err and err.count("\n") == (0 if code == 0 else 1), err
        assert "allow_pickle" not in err, err                      # our own message, not numpy's hint
        after = _sha(tmp)
        assert {n: after[n] for n in before} == before           # the model and the calibration file unchanged
        assert sorted(after) == sorted(before) + (["out.onnx"] if code == 0 else [])   # nothing partial left
        if code == 0:
            onnx.checker.check_model(out, full_check=True)
    _TRIED_CALIB["inputs"] += 1
    _TRIED_CALIB["codes"][code] = _TRIED_CALIB["codes"].get(code, 0) + 1


def test_calibration_fuzz_tried_the_promised_number_of_inputs(capsys):
    if _TRIED_CALIB["inputs"] == 0:
        pytest.skip("run together with test_mutated_calibration_files_fail_cleanly")
    with capsys.disabled():
        print(f"\n[fuzz] {_TRIED_CALIB['inputs']} mutated calibration files; exit codes seen: {_TRIED_CALIB['codes']}")
    assert _TRIED_CALIB["inputs"] >= CALIB_EXAMPLES
    assert 6 in _TRIED_CALIB["codes"] and 0 in _TRIED_CALIB["codes"]


def test_fuzz_tried_the_promised_number_of_inputs(capsys):
    if _TRIED["inputs"] == 0:
        pytest.skip("run together with test_mutated_models_fail_cleanly")
    with capsys.disabled():
        print(f"\n[fuzz] {_TRIED['inputs']} mutated models; exit codes seen (2 commands each): {_TRIED['codes']}")
    assert _TRIED["inputs"] >= EXAMPLES
