"""Classifier discovery in ONNX graphs, and every refusal of a model the tool cannot refine."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

from lip_agnostic.tools import api
from lip_agnostic.tools.errors import ClassifierNotFoundError, ModelReadError, UnsupportedWeightError
from lip_agnostic.tools.graph import classifier_candidates, read_bias, read_weight, select_classifier
from lip_agnostic.tools.model_io import load_model
from onnx_models import LAYOUTS, mlp_model


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_every_layout_finds_the_head_with_its_effective_weight_and_bias(layout, dtype):
    alpha, beta = (1.5, 0.5) if layout.startswith("gemm") else (1.0, 1.0)
    model, p = mlp_model(layout=layout, dtype=dtype, alpha=alpha, beta=beta)
    loaded = load_model(model)
    c = select_classifier(loaded)
    assert (c.q, c.l) == p["W"].shape
    assert c.input_name == "feat" and c.output_name == "logits"
    assert c.weight.dtype == dtype
    W = np.asarray(read_weight(loaded, c), dtype=np.float64) * c.alpha
    np.testing.assert_allclose(W, p["W"], rtol=1e-6)
    b = read_bias(loaded, c)
    if p["b"] is None:
        assert b is None
    else:
        np.testing.assert_allclose(b, p["b"], rtol=1e-6)


def test_logits_and_probs_outputs_give_one_candidate_not_two():
    model, _ = mlp_model(layout="gemm_t")
    cands, quantized = classifier_candidates(load_model(model))
    assert [c.node_name for c in cands] == ["head"] and quantized == []


def _two_heads() -> onnx.ModelProto:
    model, _ = mlp_model(layout="gemm")
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.ones((6, 3), np.float32), "W_aux"))
    g.node.append(helper.make_node("MatMul", ["feat", "W_aux"], ["aux"], name="aux_head"))
    g.output.append(helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["n", 3]))
    return model


def test_two_heads_are_ambiguous_and_listed_until_layer_is_given():
    loaded = load_model(_two_heads())
    with pytest.raises(ClassifierNotFoundError, match=r"^2 classifier candidates; choose one with --layer NAME: 'head' \(Gemm, W 6x4\), 'aux_head' \(MatMul, W 6x3\)[^\n]*$"):
        select_classifier(loaded)
    assert select_classifier(loaded, "aux_head").l == 3
    assert select_classifier(loaded, "W").node_name == "head"   # by weight name
    with pytest.raises(ClassifierNotFoundError, match="(?s)no Gemm/MatMul layer named 'nope'.*hidden"):
        select_classifier(loaded, "nope")


def test_a_hidden_linear_layer_is_refused_for_a_refit_and_readable_for_inspection():
    loaded = load_model(mlp_model()[0])
    with pytest.raises(ClassifierNotFoundError, match=r"layer 'hidden' does not produce the model's output.*"
                                                      r"LIP refits only the output layer: 'head'"):
        select_classifier(loaded, "hidden")
    c = select_classifier(loaded, "hidden", output_only=False)  # inspect / compare only read it
    assert (c.q, c.l) == (5, 6)


def test_a_model_without_linear_layer_is_refused():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    with pytest.raises(ClassifierNotFoundError, match=r"no classifier found.*\['y'\]"):
        select_classifier(load_model(helper.make_model(g)))


def test_dynamic_weight_is_not_a_classifier():
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
                           helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
    with pytest.raises(ClassifierNotFoundError, match="no classifier found"):
        select_classifier(load_model(helper.make_model(g)))


def _quantized_dequantize() -> onnx.ModelProto:
    wq = numpy_helper.from_array(np.ones((3, 2), np.int8), "Wq")
    sc = numpy_helper.from_array(np.asarray(0.1, np.float32), "scale")
    zp = numpy_helper.from_array(np.asarray(0, np.int8), "zp")
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "scale", "zp"], ["W"]),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="head")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])], [wq, sc, zp])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _quantized_qlinear() -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.ones((3, 2), np.uint8), "Wq")] + [
        numpy_helper.from_array(np.asarray(v, dt), n) for n, v, dt in
        (("as", 0.1, np.float32), ("az", 0, np.uint8), ("bs", 0.1, np.float32), ("bz", 0, np.uint8),
         ("ys", 0.1, np.float32), ("yz", 0, np.uint8))]
    nodes = [helper.make_node("QLinearMatMul", ["x", "as", "az", "Wq", "bs", "bz", "ys", "yz"], ["y"], name="qhead")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, ["n", 2])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("build, what", [(_quantized_dequantize, "DequantizeLinear"), (_quantized_qlinear, "QLinearMatMul")])
def test_quantized_classifiers_are_refused(build, what):
    with pytest.raises(UnsupportedWeightError, match=f"quantized.*{what}"):
        select_classifier(load_model(build()))


def test_int8_weight_chosen_by_layer_is_refused():
    with pytest.raises(UnsupportedWeightError, match="quantized weight.*DequantizeLinear"):
        select_classifier(load_model(_quantized_dequantize()), "head")


def test_shared_weight_is_refused():
    model, _ = mlp_model(layout="matmul")
    g = model.graph
    g.node.append(helper.make_node("MatMul", ["feat", "W"], ["twin"], name="twin"))
    g.node.append(helper.make_node("Add", ["logits", "twin"], ["both"], name="sum"))
    g.output.append(helper.make_tensor_value_info("both", TensorProto.FLOAT, ["n", 4]))
    with pytest.raises(UnsupportedWeightError, match=r"weight 'W' is shared by 2 nodes \['head', 'twin'\]"):
        select_classifier(load_model(model), "head")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_weight_is_refused(bad):
    model, p = mlp_model(layout="gemm")
    W = p["W"].astype(np.float32)
    W[1, 2] = bad
    idx = [t.name for t in model.graph.initializer].index("W")
    model.graph.initializer[idx].CopyFrom(numpy_helper.from_array(W, "W"))
    with pytest.raises(UnsupportedWeightError, match=r"'W' \(shape \[6, 4\]\) contains 1 NaN/Inf"):
        api.denoise(model, rank=2)


def test_truncated_raw_data_is_a_read_error():
    model, _ = mlp_model(layout="gemm")
    t = [t for t in model.graph.initializer if t.name == "W"][0]
    t.raw_data = t.raw_data[:-4]
    with pytest.raises(ModelReadError, match=r"tensor 'W' \(dims \[6, 4\]\) holds 92 bytes of data, expected 96"):
        load_model(model)


@pytest.mark.parametrize("attr, value, msg", [("transA", 1, "transA=1"), ("alpha", 0.0, "alpha=0")])
def test_gemm_attributes_lip_cannot_handle_are_refused(attr, value, msg):
    model, _ = mlp_model(layout="gemm", q=4, l=4)
    head = [n for n in model.graph.node if n.name == "head"][0]
    for a in list(head.attribute):
        if a.name == attr:
            head.attribute.remove(a)
    head.attribute.append(helper.make_attribute(attr, value))
    with pytest.raises(UnsupportedWeightError, match=msg):
        select_classifier(load_model(model), "head")


def test_weight_shared_through_a_transpose_is_refused():
    model, _ = mlp_model(layout="transpose")
    g = model.graph
    g.node.append(helper.make_node("MatMul", ["feat", "Wt"], ["twin"], name="twin"))
    g.output.append(helper.make_tensor_value_info("twin", TensorProto.FLOAT, ["n", 4]))
    with pytest.raises(UnsupportedWeightError, match=r"'W' is shared by 2 nodes \['head', 'twin'\] \(through 'Wt'\)"):
        select_classifier(load_model(model), "head")
