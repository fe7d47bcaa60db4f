"""Regenerate the embedded ``lip-onnx demo`` model and its data.

A small MLP (64 -> 64 ReLU -> 10) trained by full-batch Adam in NumPy on
scikit-learn's bundled digits (offline), with a fraction ``NOISE`` of the
training labels flipped uniformly to another class, long enough to fit the
noise. Writes, next to this file:

- ``demo_digits.onnx``: the classifier (``Gemm`` with ``transB=1``, like a
  PyTorch export), outputs ``logits`` and ``probs``;
- ``demo_digits_calib.npz``: ``pixels`` + noisy ``labels`` (the training
  set), ``val_pixels`` + noisy ``val_labels`` (held-out, for ``--rank auto``);
- ``demo_digits_test.npz``: ``pixels`` + clean ``labels`` (never seen).

Run: ``python tools/data/make_demo.py`` (a few seconds; deterministic).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Fraction of training (and validation) labels flipped to another class.
NOISE = 0.4
HIDDEN = 64
EPOCHS = 1500
SEED = 0
HERE = os.path.dirname(os.path.abspath(__file__))


def _noisy(y: np.ndarray, rate: float, rng: np.random.Generator, l: int = 10) -> np.ndarray:
    flip = rng.random(y.shape[0]) < rate
    other = (y + rng.integers(1, l, y.shape[0])) % l
    return np.where(flip, other, y)


def _train(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    n, d = x.shape
    l = 10
    params = [rng.normal(0, np.sqrt(2 / d), (d, HIDDEN)), np.zeros(HIDDEN),
              rng.normal(0, np.sqrt(1 / HIDDEN), (HIDDEN, l)), np.zeros(l)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    Y = np.eye(l)[y]
    lr, b1, b2 = 1e-2, 0.9, 0.999
    for t in range(1, EPOCHS + 1):
        W1, c1, W2, c2 = params
        h = np.maximum(x @ W1 + c1, 0)
        z = h @ W2 + c2
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - Y) / n
        gW2, gc2 = h.T @ g, g.sum(0)
        gh = (g @ W2.T) * (h > 0)
        grads = [x.T @ gh, gh.sum(0), gW2, gc2]
        for i, gr in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * gr
            v[i] = b2 * v[i] + (1 - b2) * gr * gr
            params[i] -= lr * (m[i] / (1 - b1 ** t)) / (np.sqrt(v[i] / (1 - b2 ** t)) + 1e-8)
    return params


def build_model(params: list[np.ndarray]) -> onnx.ModelProto:
    """The ONNX graph: Gemm(transB=1) -> Relu -> Gemm(transB=1) -> logits, Softmax -> probs."""
    W1, c1, W2, c2 = (p.astype(np.float32) for p in params)
    inits = [numpy_helper.from_array(np.ascontiguousarray(W1.T), "fc1.weight"), numpy_helper.from_array(c1, "fc1.bias"),
             numpy_helper.from_array(np.ascontiguousarray(W2.T), "fc2.weight"), numpy_helper.from_array(c2, "fc2.bias")]
    nodes = [
        helper.make_node("Gemm", ["pixels", "fc1.weight", "fc1.bias"], ["h1"], name="fc1", transB=1),
        helper.make_node("Relu", ["h1"], ["features"], name="relu"),
        helper.make_node("Gemm", ["features", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    g = helper.make_graph(nodes, "digits_mlp",
                          [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
                           helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="lip-agnostic make_demo")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main(out_dir: str = HERE) -> None:
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(SEED)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = rng.permutation(len(y))
    x, y = x[order], y[order].astype(np.int64)
    tr, va = slice(0, 1000), slice(1000, 1300)
    te = slice(1300, None)
    y_tr, y_va = _noisy(y[tr], NOISE, rng), _noisy(y[va], NOISE, rng)
    params = _train(x[tr].astype(np.float64), y_tr, rng)
    onnx.save(build_model(params), os.path.join(out_dir, "demo_digits.onnx"))
    np.savez_compressed(os.path.join(out_dir, "demo_digits_calib.npz"), pixels=x[tr], labels=y_tr,
                        val_pixels=x[va], val_labels=y_va)
    np.savez_compressed(os.path.join(out_dir, "demo_digits_test.npz"), pixels=x[te], labels=y[te])
    print(f"wrote demo model + data to {out_dir} (noise {NOISE}, {EPOCHS} epochs)")


if __name__ == "__main__":
    main()
