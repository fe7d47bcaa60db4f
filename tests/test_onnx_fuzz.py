"""Fuzz: mutated model bytes must end in a documented exit code, never in a traceback."""

from __future__ import annotations

import os
import tempfile

import onnx
import pytest

pytest.importorskip("onnxruntime")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lip_agnostic.tools import cli
from lip_agnostic.tools.errors import EXIT_CODES
from lip_agnostic.tools.testing import mlp_model

EXAMPLES = 200
_MODEL = mlp_model(layout="matmul_add", q=6, l=4, d=3)[0].SerializeToString()
_TRIED = {"inputs": 0, "codes": {}}


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


def test_fuzz_tried_the_promised_number_of_inputs(capsys):
    if _TRIED["inputs"] == 0:
        pytest.skip("run together with test_mutated_models_fail_cleanly")
    with capsys.disabled():
        print(f"\n[fuzz] {_TRIED['inputs']} mutated models; exit codes seen (2 commands each): {_TRIED['codes']}")
    assert _TRIED["inputs"] >= EXAMPLES
