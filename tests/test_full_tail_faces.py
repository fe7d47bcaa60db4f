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
    report = finalize(fc, loader, k=1, tail="full", ridge=0.3, progress=False)
    assert torch.allclose(fc.weight, ref_W.T, rtol=1e-10, atol=1e-12)
    assert torch.allclose(fc.bias, ref_b, rtol=1e-10, atol=1e-12) and not torch.equal(fc.bias, b0)
    assert (report["tail"], report["beyond_paper"], report["bias_refit"]) == ("full", True, True)
    # the same through the optimizer wrapper's **lip_options, with ridge chosen on validation data
    with torch.no_grad():
        fc.weight.copy_(W0)
        fc.bias.copy_(b0)
    xv, yv = _data(1, 200)
    val = [(torch.from_numpy(xv).double(), torch.from_numpy(yv))]
    opt = LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), fc, k=2, tail="full", confidence=None)
    rep = opt.finalize(loader, validation=val, progress=False)
    with torch.no_grad():
        fv = model[:2](val[0][0])
    from lip_agnostic import FullTailAccumulator

    sel = FullTailAccumulator(W0.T, 2, bias=b0).update(feats, Y).scores(fv, val[0][1], confidence=None)
    assert (rep["selection"]["k"], rep["selection"]["ridge"]) == (sel.k, sel.ridge)
    with pytest.raises(ValueError, match=r"tail must be 'diagonal' \(the paper\) or 'full'"):
        LIPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), fc, k=2, tail="wide")


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
    res = refine_model(model, (x, y), k=1, tail="full", ridge=0.3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.kernel), ref_W, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.bias), ref_b, rtol=2e-4, atol=2e-5)
    assert res.tail == "full" and res.to_dict()["beyond_paper"] is True
