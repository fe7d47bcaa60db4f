"""``lip_agnostic.svd``: the randomized top-k SVD ``lip-onnx`` uses for large classifiers."""

from __future__ import annotations

import numpy as np
import pytest

import lip_agnostic as lip
import lip_agnostic.svd as lip_svd
from lip_agnostic.svd import low_rank_blocks, top_svd, truncate_top


def _gapped(rng, q=300, l=200, r=8, noise=1e-3):
    return (rng.normal(size=(q, r)) * np.geomspace(50, 5, r)) @ rng.normal(size=(r, l)) / 10 + noise * rng.normal(size=(q, l))


@pytest.mark.parametrize("k", [1, 4, 8])
def test_top_svd_matches_the_exact_svd_when_there_is_a_gap(rng, k):
    W = _gapped(rng)
    res = top_svd(W, k)
    s = np.linalg.svd(W, compute_uv=False)
    assert res.method == "randomized" and res.converged
    np.testing.assert_allclose(res.svd.s, s[:k], rtol=1e-6)
    Wk = np.vstack(list(low_rank_blocks(res.svd, block_rows=64)))
    np.testing.assert_allclose(Wk, lip.project_principal(W, k), atol=1e-8 * np.abs(W).max() + 1e-9)
    U, V = res.svd.U, res.svd.V
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-10)
    np.testing.assert_allclose(V.T @ V, np.eye(k), atol=1e-10)
    assert res.energy_kept() == pytest.approx(np.sum(s[:k] ** 2) / np.sum(s ** 2), rel=1e-9)


def test_transposed_blocks_build_the_transpose(rng):
    W = _gapped(rng, q=50, l=70)
    res = top_svd(W, 3)
    np.testing.assert_allclose(np.vstack(list(low_rank_blocks(res.svd, block_rows=7, transpose=True))),
                               np.vstack(list(low_rank_blocks(res.svd))).T, atol=1e-12)


def test_small_or_wide_sketches_use_the_exact_svd(rng):
    W = rng.normal(size=(20, 12))
    res = top_svd(W, 4)
    assert res.method == "exact" and res.iterations == 0
    np.testing.assert_allclose(res.svd.s, np.linalg.svd(W, compute_uv=False)[:4])


@pytest.mark.parametrize("f", [0.5, 0.9, 0.999, 1.0])
def test_energy_fraction_gives_the_cores_energy_rank(rng, f):
    W = _gapped(rng, r=40, noise=1e-2)
    res = truncate_top(W, f)
    assert res.k == lip_svd.energy_rank(np.linalg.svd(W, compute_uv=False), f)
    assert res.svd.s.shape == (res.k,)


def test_float32_stays_float32(rng):
    W = _gapped(rng).astype(np.float32)
    assert top_svd(W, 3).svd.U.dtype == np.float32


@pytest.mark.parametrize("W, k, exc, msg", [
    (np.ones(5), 1, ValueError, "2-D weight matrix"),
    (np.ones((4, 3), np.int64), 1, TypeError, "real floating dtype"),
    (np.ones((0, 3)), 0, ValueError, "non-empty"),
    (np.ones((4, 3)), 4, ValueError, r"\[0, min\(q, l\)=3\]"),
    (np.ones((4, 3)), 1.5, ValueError, r"fraction must lie in \(0, 1\]"),
])
def test_bad_inputs_are_refused(W, k, exc, msg):
    with pytest.raises(exc, match=msg):
        truncate_top(W, k)


def test_nan_is_refused_by_the_energy_pass(rng):
    W = _gapped(rng)
    W[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf.*\(300, 200\)"):
        top_svd(W, 2)


@pytest.mark.parametrize("kw, msg", [({"oversample": -1}, "oversample must be a non-negative integer"),
                                     ({"max_iter": 1.5}, "max_iter must be"), ({"tol": 0.0}, "tol must be positive")])
def test_bad_options_are_refused(rng, kw, msg):
    with pytest.raises(ValueError, match=msg):
        top_svd(_gapped(rng), 2, **kw)
    with pytest.raises(ValueError, match="block_rows must be a positive integer"):
        list(low_rank_blocks(top_svd(_gapped(rng), 2).svd, block_rows=0))


def test_large_nan_weight_is_refused_by_the_cli_path(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import numpy_helper

    from lip_agnostic.tools import api
    from lip_agnostic.tools.errors import UnsupportedWeightError
    from onnx_models import mlp_model
    model, p = mlp_model(layout="gemm", q=30, l=20)
    W = p["W"].astype(np.float32)
    W[2, 2] = np.inf
    [t for t in model.graph.initializer if t.name == "W"][0].CopyFrom(numpy_helper.from_array(W, "W"))
    onnx.save(model, tmp_path / "m.onnx")
    monkeypatch.setattr(api, "LARGE_WEIGHT", 10)
    with pytest.raises(UnsupportedWeightError, match=r"contains 1 NaN/Inf value\(s\); refused"):
        api.denoise_file(str(tmp_path / "m.onnx"), rank=3)
    assert not (tmp_path / "m.lip.onnx").exists()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rank_deficient_weights_take_the_fallbacks_and_stay_exact(rng, dtype):
    W = (rng.normal(size=(300, 3)) * [9.0, 4.0, 1.0]) @ rng.normal(size=(3, 200))   # rank 3 < sketch width
    W = W.astype(dtype)
    res = top_svd(W, 2)
    assert res.method == "randomized"
    s = np.linalg.svd(W.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(res.svd.s, s[:2], rtol=1e-5 if dtype == np.float32 else 1e-10)
    U = np.asarray(res.svd.U, np.float64)
    np.testing.assert_allclose(U.T @ U, np.eye(2), atol=1e-5 if dtype == np.float32 else 1e-10)
    Wk = np.vstack(list(low_rank_blocks(res.svd))).astype(np.float64)
    np.testing.assert_allclose(Wk, lip.project_principal(W.astype(np.float64), 2), atol=1e-4 * np.abs(W).max())
