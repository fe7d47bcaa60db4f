"""tail="full" (beyond the paper) through every face: each writes the core's W* (and refit bias)."""

from __future__ import annotations

import numpy as np
import pytest

from lip_agnostic import full_tail_refine

Q, L = 12, 4


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = rng.integers(0, L, n)
    return x, y


# ------------------------------------------------------------------- torch
def test_torch_finalize_and_lip_optimizer_write_the_full_tail_refit():
    torch = pytest.importorskip("torch")
    from torch import nn

    from lip_agnostic.adapters.torch import LIPOptimizer, finalize

    x, y = _data()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, Q), nn.Tanh(), nn.Linear(Q, L)).double()
    X, Y = torch.from_numpy(x).double(), torch.from_numpy(y)
    loader = [(X[i:i + 64], Y[i:i + 64]) for i in range(0, 300, 64)]
    fc = model[2]
    W0, b0 = fc.weight.detach().clone(), fc.bias.detach().clone()
    with torch.no_grad():
        feats = model[:2](X)
    ref_W, ref_b = full_tail_refine(W0.T, feats, Y, 1, bias=b0, ridge=0.3)
    report = finalize(fc, loader, rank=1, tail="full", ridge=0.3, progress=False)
    assert torch.allclose(fc.weight, ref_W.T, rtol=1e-10, atol=1e-12)
    assert torch.allclose(fc.bias, ref_b, rtol=1e-10, atol=1e-12) and not torch.equal(fc.bias, b0)
    assert (report.to_dict()["tail"], report.to_dict()["beyond_paper"], report.to_dict()["bias_refit"]) == ("full", True, True)
    # the same through the optimizer wrapper's **lip_options, with ridge chosen on validation data
    with torch.no_grad():
        fc.weight.copy_(W0)
        fc.bias.copy_(b0)
    xv, yv = _data(1, 200)
    val = [(torch.from_numpy(xv).double(), torch.from_numpy(yv))]
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), fc, rank=2, tail="full")
    rep = opt.finalize(loader, validation=val, progress=False)
    with torch.no_grad():
        fv = model[:2](val[0][0])
    from lip_agnostic import FullTailAccumulator

    # a fixed rank forces the change: the best ridge on the held-out data, no guard
    sel = FullTailAccumulator(W0.T, 2, bias=b0).update(feats, Y).scorer().update(fv, val[0][1]).best(guarded=False)
    assert (rep.to_dict()["selection"]["k"], rep.to_dict()["selection"]["ridge"]) == (sel.k, sel.ridge)
    with pytest.raises(ValueError, match=r"tail must be 'auto', 'diagonal' \(the paper\) or 'full'"):
        LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), fc, rank=2, tail="wide")


# ------------------------------------------------------------------- keras
def test_keras_refine_model_writes_the_full_tail_refit():
    keras = pytest.importorskip("keras")
    from lip_agnostic.adapters.keras import refine_model

    x, y = _data()
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = keras.layers.Dense(Q, activation="tanh", name="hidden")(inp)
    out = keras.layers.Dense(L, name="classifier")(h)
    model = keras.Model(inp, out)
    feats = keras.Model(inp, h).predict(x, verbose=0).astype(np.float64)
    layer = model.get_layer("classifier")
    W0 = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    b0 = keras.ops.convert_to_numpy(layer.bias).astype(np.float64)
    ref_W, ref_b = full_tail_refine(W0, feats, y, 1, bias=b0, ridge=0.3)
    res = refine_model(model, (x, y), rank=1, tail="full", ridge=0.3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.kernel), ref_W, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.bias), ref_b, rtol=2e-4, atol=2e-5)
    assert res.tail == "full" and res.to_dict()["beyond_paper"] is True


# ------------------------------------------------------------------- lip-onnx
@pytest.mark.parametrize("layout, beta", [("gemm_t", 1.0), ("matmul_add", 1.0), ("gemm", 2.0)])
def test_lip_onnx_tail_full_writes_the_cores_weight_and_bias(tmp_path, layout, beta, capsys):
    pytest.importorskip("onnxruntime")
    import json

    import onnx

    from lip_agnostic.tools import cli
    from lip_agnostic.tools.graph import read_bias, read_weight, select_classifier
    from lip_agnostic.tools.model_io import load_model
    from onnx_models import mlp_model

    model, p = mlp_model(layout=layout, q=Q, l=L, d=5, beta=beta)
    onnx.save(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(3)
    x = rng.random((240, 5), dtype=np.float32)
    feat = np.maximum(x.astype(np.float64) @ p["W1"].astype(np.float64) + p["b1"], 0)
    labels = rng.integers(0, L, 240)
    np.savez(tmp_path / "cal.npz", x=x, labels=labels)
    code = cli.main(["denoise", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "cal.npz"), "--rank", "1",
                     "--tail", "full", "--ridge", "0.5", "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "full-tail ridge refit (beyond the paper; ridge 0.5)" in out
    assert "result    changed: the top 1 of 4 components kept, the whole complement ridge-refit" in out and "; beyond the paper\n" in out
    b_eff = p["b"].astype(np.float64) * (beta if layout.startswith("gemm") else 1.0)  # Gemm adds beta * C
    ref_W, ref_b = full_tail_refine(p["W"].astype(np.float64), feat, labels, 1, bias=b_eff, ridge=0.5)
    loaded = load_model(str(tmp_path / "m.lip.onnx"))
    c = select_classifier(loaded)
    np.testing.assert_allclose(np.asarray(read_weight(loaded, c), np.float64) * c.alpha, ref_W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(read_bias(loaded, c), ref_b, rtol=1e-4, atol=1e-5)
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["tail"], report["beyond_paper"], report["calibration"]["bias_refit"]) == ("full", True, True)
    assert report["rank"]["ridge"] == 0.5 and report["validation"]["checker"] == "ok"


def test_lip_onnx_tail_options_are_checked_with_messages(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import onnx

    from lip_agnostic.tools import api, cli
    from lip_agnostic.tools.errors import UsageError
    from onnx_models import mlp_model

    model, _ = mlp_model(layout="gemm_t", q=Q, l=L)
    onnx.save(model, tmp_path / "m.onnx")
    path = str(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match=r"--ridge applies to --tail full only"):
        api.denoise_file(path, rank=2, tail="diagonal", ridge=1.0)
    with pytest.raises(UsageError, match=r"--tail full refits the classifier against labels: it needs --calib"):
        api.denoise_file(path, rank=2, tail="full")
    with pytest.raises(UsageError, match=r"--tail must be 'auto' \(the default: the evidence's choice\), 'diagonal' \(the paper\) or 'full' \(beyond the paper\); got 'wide'"):
        api.denoise_file(path, rank=2, tail="wide")
    with pytest.raises(UsageError, match=r"--ridge must be 'auto' or a number >= 0; got -1.0"):
        api.check_options(rank=2, calib="c.npz", tail="full", ridge=-1.0)
    assert cli.main(["denoise", path, "--rank", "2", "--tail", "full", "--ridge", "x"]) != 0
    assert "expected a number >= 0 or 'auto'; got 'x'" in capsys.readouterr().err
