"""Models as real exporters write them: torch (legacy and dynamo), Keras 3, tf2onnx.

For each, ``lip-onnx denoise`` must find the head, write the core's rank-k
projection of its weight back in the exporter's own layout, and the refined
model must compute ``features @ W_k + b`` in onnxruntime.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

ort = pytest.importorskip("onnxruntime")

import lip_agnostic as lip
from lip_agnostic.tools import api
from lip_agnostic.tools.graph import read_bias, read_weight, select_classifier
from lip_agnostic.tools.model_io import load_model

D, Q, L, K = 8, 16, 5, 2


def _params(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(D, Q)).astype(np.float32), rng.normal(size=Q).astype(np.float32),
            (rng.normal(size=(Q, L)) * np.linspace(2, 0.3, L)).astype(np.float32), rng.normal(size=L).astype(np.float32))


def _check_refined(path: str, W1, b1, W, b, input_name: str | None = None):
    loaded = load_model(path)
    c = select_classifier(loaded)
    W_old = np.asarray(read_weight(loaded, c), np.float64) * c.alpha
    np.testing.assert_allclose(W_old, W, rtol=1e-5, atol=1e-6)
    report = api.denoise_file(path, rank=K)
    assert report["validation"]["checker"] == "ok"
    out = load_model(report["output"])
    c_new = select_classifier(out)
    W_new = np.asarray(read_weight(out, c_new), np.float64) * c_new.alpha
    ref = lip.project_principal(W.astype(np.float64), K)
    np.testing.assert_allclose(W_new, ref, atol=1e-5)
    assert c_new.layout == c.layout and c_new.weight.dtype == c.weight.dtype
    x = np.random.default_rng(5).random((9, D), dtype=np.float32)
    sess = ort.InferenceSession(report["output"], providers=["CPUExecutionProvider"])
    name = input_name or sess.get_inputs()[0].name
    outs = sess.run(None, {name: x})
    logits = np.maximum(x @ W1 + b1, 0) @ ref + b
    assert any(o.shape == logits.shape and np.allclose(o, logits, rtol=1e-4, atol=1e-4) for o in outs)
    return c, report


def _torch_model():
    torch = pytest.importorskip("torch")
    W1, b1, W, b = _params()
    net = torch.nn.Sequential(torch.nn.Linear(D, Q), torch.nn.ReLU(), torch.nn.Linear(Q, L))
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(W1.T)), net[0].bias.copy_(torch.from_numpy(b1))
        net[2].weight.copy_(torch.from_numpy(W.T)), net[2].bias.copy_(torch.from_numpy(b))
    return torch, net.eval(), (W1, b1, W, b)


def test_torch_legacy_export(tmp_path):
    torch, net, p = _torch_model()
    path = str(tmp_path / "torch_legacy.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, D),), path, dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    c, _ = _check_refined(path, *p)
    assert c.op_type == "Gemm" and c.layout == "(l, q)"
    # the full LIP through the exporter's own tensor names
    rng = np.random.default_rng(0)
    x = rng.random((120, D), dtype=np.float32)
    y = rng.integers(0, L, 120)
    report = api.denoise_file(path, str(tmp_path / "lip.onnx"), calib={"x": x, "labels": y}, rank=K)
    feats = np.maximum(x.astype(np.float64) @ p[0] + p[1], 0)
    ref = lip.lip_refine(p[2].astype(np.float64), feats, y, K, bias=p[3].astype(np.float64))
    out = load_model(report["output"])
    cn = select_classifier(out)
    np.testing.assert_allclose(np.asarray(read_weight(out, cn), np.float64) * cn.alpha, ref, rtol=1e-3, atol=1e-4)


def test_torch_dynamo_export(tmp_path):
    torch, net, p = _torch_model()
    pytest.importorskip("onnxscript")
    path = str(tmp_path / "torch_dynamo.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(net, (torch.zeros(2, D),), dynamo=True, input_names=["x"],
                                 dynamic_shapes=({0: torch.export.Dim("n")},), verbose=False)
        prog.save(path)
    c, _ = _check_refined(path, *p)
    assert c.op_type in ("Gemm", "MatMul")


def test_keras3_export(tmp_path):
    keras = pytest.importorskip("keras")
    pytest.importorskip("tf2onnx", reason="Keras 3 ONNX export goes through tf2onnx")
    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"Keras ONNX export tested with the TensorFlow backend (have {keras.backend.backend()})")
    W1, b1, W, b = _params()
    inp = keras.Input((D,), name="x")
    h = keras.layers.Dense(Q, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(L, name="head")(h)
    model = keras.Model(inp, out)
    model.get_layer("hidden").set_weights([W1, b1])
    model.get_layer("head").set_weights([W, b])
    model(np.zeros((1, D), np.float32))  # Keras exports only a model that has been called
    path = str(tmp_path / "keras.onnx")
    model.export(path, format="onnx", verbose=False)
    c, _ = _check_refined(path, W1, b1, W, b)
    assert c.op_type in ("MatMul", "Gemm")


def test_tf2onnx_from_tf_function(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tf2onnx = pytest.importorskip("tf2onnx")
    W1, b1, W, b = _params()
    v = [tf.Variable(a) for a in (W1, b1, W, b)]  # trained weights are variables -> initializers

    @tf.function(input_signature=[tf.TensorSpec([None, D], tf.float32, name="x")])
    def f(x):
        return tf.matmul(tf.nn.relu(tf.matmul(x, v[0]) + v[1]), v[2]) + v[3]

    model, _ = tf2onnx.convert.from_function(f, input_signature=f.input_signature, opset=17)
    path = str(tmp_path / "tf2onnx.onnx")
    onnx.save(model, path)
    c, _ = _check_refined(path, W1, b1, W, b)
    assert c.op_type in ("MatMul", "Gemm")
    assert read_bias(load_model(path), c) is not None
