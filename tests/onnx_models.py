"""Small ONNX classifiers built by hand, in every layout exporters produce (tests and benchmarks; not shipped).

Each model is ``x (n, d) -> Gemm(d -> q) -> Relu -> classifier (q -> l) ->
logits -> Softmax -> probs``; the classifier's layout varies (``layout``):

- ``"gemm"``: ``Gemm`` with ``B (q, l)``, ``transB=0``;
- ``"gemm_t"``: ``Gemm`` with ``B (l, q)``, ``transB=1`` (PyTorch legacy export);
- ``"matmul_add"``: ``MatMul`` with ``W (q, l)`` then ``Add`` bias (Keras / tf2onnx);
- ``"matmul"``: ``MatMul`` without bias;
- ``"transpose"``: ``Transpose(W (l, q))`` then ``MatMul`` (some dynamo exports);
- ``"constant"``: the weight in a ``Constant`` node.

>>> from onnx_models import mlp_model      # tests/ on sys.path, as under pytest
>>> model, p = mlp_model(layout="gemm_t")
>>> p["W"].shape
(6, 4)
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["mlp_model", "LAYOUTS", "write_big_mlp"]

LAYOUTS = ("gemm", "gemm_t", "matmul_add", "matmul", "transpose", "constant")


def mlp_model(*, d: int = 5, q: int = 6, l: int = 4, layout: str = "gemm_t", dtype: str = "float32",
              alpha: float = 1.0, beta: float = 1.0, seed: int = 0, opset: int = 17) -> tuple[onnx.ModelProto, dict]:
    """The model and its parameters: ``W (q, l)`` (effective, alpha included), ``b (l,)``, ``W1``, ``b1``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    rng = np.random.default_rng(seed)
    np_dt = np.dtype(dtype)
    tp = helper.np_dtype_to_tensor_dtype(np_dt)
    W1 = rng.normal(size=(d, q)).astype(np_dt)
    b1 = rng.normal(size=q).astype(np_dt)
    W = (rng.normal(size=(q, l)) * np.linspace(3, 0.5, l)).astype(np_dt)
    b = rng.normal(size=l).astype(np_dt)
    inits = [numpy_helper.from_array(W1, "W1"), numpy_helper.from_array(b1, "b1")]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="hidden"),
             helper.make_node("Relu", ["h"], ["feat"], name="relu")]
    if layout == "gemm":
        inits += [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")]
        nodes.append(helper.make_node("Gemm", ["feat", "W", "b"], ["logits"], name="head", alpha=alpha, beta=beta))
    elif layout == "gemm_t":
        inits += [numpy_helper.from_array(np.ascontiguousarray(W.T), "W"), numpy_helper.from_array(b, "b")]
        nodes.append(helper.make_node("Gemm", ["feat", "W", "b"], ["logits"], name="head", transB=1,
                                      alpha=alpha, beta=beta))
    elif layout in ("matmul_add", "matmul"):
        inits.append(numpy_helper.from_array(W, "W"))
        if layout == "matmul":
            nodes.append(helper.make_node("MatMul", ["feat", "W"], ["logits"], name="head"))
        else:
            inits.append(numpy_helper.from_array(b, "b"))
            nodes += [helper.make_node("MatMul", ["feat", "W"], ["mm"], name="head"),
                      helper.make_node("Add", ["mm", "b"], ["logits"], name="head_bias")]
    elif layout == "transpose":
        inits += [numpy_helper.from_array(np.ascontiguousarray(W.T), "W"), numpy_helper.from_array(b, "b")]
        nodes += [helper.make_node("Transpose", ["W"], ["Wt"], name="wt", perm=[1, 0]),
                  helper.make_node("MatMul", ["feat", "Wt"], ["mm"], name="head"),
                  helper.make_node("Add", ["mm", "b"], ["logits"], name="head_bias")]
    else:  # constant
        inits.append(numpy_helper.from_array(b, "b"))
        nodes += [helper.make_node("Constant", [], ["W"], name="wconst", value=numpy_helper.from_array(W, "Wc")),
                  helper.make_node("MatMul", ["feat", "W"], ["mm"], name="head"),
                  helper.make_node("Add", ["mm", "b"], ["logits"], name="head_bias")]
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1))
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", tp, ["n", d])],
                          [helper.make_tensor_value_info("logits", tp, ["n", l]),
                           helper.make_tensor_value_info("probs", tp, ["n", l])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    params = {"W": (W.astype(np.float64) * (alpha if layout.startswith("gemm") else 1.0)),
              "b": None if layout == "matmul" else b.astype(np.float64) * (beta if layout.startswith("gemm") else 1.0),
              "W1": W1, "b1": b1}
    return model, params


def write_big_mlp(path: str, *, d: int = 1024, q: int = 4096, l: int = 32000, rank: int = 64,
                  noise: float = 0.02, seed: int = 0, block_rows: int = 2048) -> int:
    """Write a large MLP with external data (``<file>.data``), generated block by block.

    The classifier ``Gemm(transB=1)`` stores ``(l, q)``; its weight is a rank-
    ``rank`` signal with a decaying spectrum plus Gaussian noise (the shape of
    a trained classifier's spectrum). Returns the total bytes written.
    """
    rng = np.random.default_rng(seed)
    folder = os.path.dirname(os.path.abspath(path))
    data_name = os.path.basename(path) + ".data"
    tensors = []
    with open(os.path.join(folder, data_name), "wb") as fh:
        def put(name: str, arr_blocks, shape):
            offset = fh.tell()
            for blk in arr_blocks:
                fh.write(np.ascontiguousarray(blk, dtype="<f4").tobytes())
            t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(fh.tell() - offset))):
                e = t.external_data.add()
                e.key, e.value = key, value
            tensors.append(t)
        put("W1", [rng.standard_normal((q, d), dtype=np.float32) / np.sqrt(d)], (q, d))
        put("b1", [np.zeros(q, np.float32)], (q,))
        left = rng.standard_normal((q, rank), dtype=np.float32) * (np.geomspace(1.0, 0.05, rank).astype(np.float32) / np.sqrt(q))
        right = rng.standard_normal((l, rank), dtype=np.float32)

        def head_blocks():
            for start in range(0, l, block_rows):
                r = right[start:start + block_rows]
                yield r @ left.T + noise / np.sqrt(q) * rng.standard_normal((r.shape[0], q), dtype=np.float32)
        put("W", head_blocks(), (l, q))
        put("b", [np.zeros(l, np.float32)], (l,))
        total = fh.tell()
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="hidden", transB=1),
             helper.make_node("Relu", ["h"], ["feat"], name="relu"),
             helper.make_node("Gemm", ["feat", "W", "b"], ["logits"], name="head", transB=1)]
    g = helper.make_graph(nodes, "big_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", l])], tensors)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return total
