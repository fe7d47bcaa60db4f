"""The reduced SVD's Gram route: accuracy against LAPACK, the switch-over rule, the fallback."""

from __future__ import annotations

import numpy as np
import pytest

import lip_agnostic.svd as gram
from lip_agnostic import reduced_svd
from lip_agnostic.svd import GRAM_MIN_WORK, svd_route


def _weight(rng, q, l, kappa):
    """A float32 weight with singular values log-spaced from 1 down to 1 / kappa."""
    m = min(q, l)
    A, _ = np.linalg.qr(rng.standard_normal((q, m)))
    B, _ = np.linalg.qr(rng.standard_normal((l, m)))
    s = np.logspace(0.0, -np.log10(kappa), m)
    return ((A * s) @ B.T).astype(np.float32)


def _errors(f, W64, backend):
    """Errors of factors against the float64 LAPACK SVD of the same (float32) weight."""
    U, s, V = (backend.to_numpy(a).astype(np.float64) for a in (f.U, f.s, f.V))
    Ur, sr, Vhr = np.linalg.svd(W64, full_matrices=False)
    m = sr.shape[0]
    # Sign-free: |<u_i, u_i_ref>| = 1 for well-separated singular values.
    return {
        "s": float(np.max(np.abs(s - sr)) / sr[0]),
        "orth_U": float(np.max(np.abs(U.T @ U - np.eye(m)))),
        "orth_V": float(np.max(np.abs(V.T @ V - np.eye(m)))),
        "reconstruction": float(np.linalg.norm((U * s) @ V.T - W64) / np.linalg.norm(W64)),
        "align_U": float(np.max(np.abs(np.abs(np.sum(U * Ur, axis=0)) - 1.0))),
        "align_V": float(np.max(np.abs(np.abs(np.sum(V * Vhr.T, axis=0)) - 1.0))),
    }


@pytest.mark.parametrize("shape", [(50, 600), (600, 50)], ids=["wide", "tall"])
def test_gram_route_is_as_accurate_as_float32_lapack(backend, rng, shape):
    Wn = _weight(rng, *shape, kappa=300.0)
    W = backend.asarray(Wn)
    fast, ref = reduced_svd(W), reduced_svd(W, method="lapack")
    assert fast.method == "gram" and ref.method == "lapack"
    m = min(shape)
    assert tuple(fast.U.shape) == (shape[0], m) and tuple(fast.V.shape) == (shape[1], m)
    assert fast.s.dtype == W.dtype and fast.U.dtype == W.dtype and fast.V.dtype == W.dtype
    s = backend.to_numpy(fast.s)
    assert np.all(np.diff(s) <= 0)
    W64 = Wn.astype(np.float64)
    e_fast, e_ref = _errors(fast, W64, backend), _errors(ref, W64, backend)
    for key in ("s", "orth_U", "orth_V", "reconstruction"):
        # Within float32 rounding, and no worse than float32 LAPACK by more than a small factor.
        assert e_fast[key] < 1e-6, (key, e_fast, e_ref)
        assert e_fast[key] <= 4 * e_ref[key] + 5e-8, (key, e_fast, e_ref)
    # Singular values spaced ~1.5 % apart: the vectors themselves match up to sign.
    assert e_fast["align_U"] < 1e-4 and e_fast["align_V"] < 1e-4, e_fast


def test_gram_route_over_many_blocks_equals_one_block(rng, monkeypatch):
    Wn = _weight(rng, 30, 500, kappa=50.0)
    one = reduced_svd(Wn, method="gram")
    monkeypatch.setattr(gram, "BLOCK_ELEMENTS", 30 * 7)  # blocks of 7 columns, the last one short
    many = reduced_svd(Wn, method="gram")
    assert many.method == one.method == "gram"
    np.testing.assert_allclose(many.s, one.s, rtol=1e-6)
    np.testing.assert_allclose(np.abs(many.U.T @ one.U), np.eye(30), atol=1e-4)
    np.testing.assert_allclose((many.U * many.s) @ many.V.T, Wn, atol=1e-6)


@pytest.mark.parametrize("kappa", [1e6, np.inf], ids=["ill-conditioned", "rank-deficient"])
def test_ill_conditioned_weight_falls_back_to_lapack(rng, kappa):
    if np.isinf(kappa):
        Wn = _weight(rng, 50, 600, kappa=10.0)
        Wn[-1] = Wn[0]  # two equal feature rows: rank 49
    else:
        Wn = _weight(rng, 50, 600, kappa=kappa)
    f = reduced_svd(Wn)
    assert f.method == "lapack"
    e = _errors(f, Wn.astype(np.float64), type("B", (), {"to_numpy": staticmethod(np.asarray)}))
    assert e["orth_V"] < 1e-5 and e["reconstruction"] < 1e-6, e


def test_just_inside_the_tolerance_the_gram_route_still_meets_float32_accuracy(rng):
    tol = gram.gram_tolerance(np, np.float32, np.float64)
    assert 4e-5 < tol < 5e-5
    Wn = _weight(rng, 50, 600, kappa=0.5 / tol)  # condition number ~11,600
    f = reduced_svd(Wn)
    assert f.method == "gram"
    V = f.V.astype(np.float64)
    assert np.max(np.abs(V.T @ V - np.eye(50))) < 5e-7


def test_switch_over_rule():
    assert svd_route((4096, 32000), np.float32, xp=np) == "gram"
    assert svd_route((32000, 4096), np.float16, xp=np) == "gram"
    assert svd_route((4096, 32000), np.float64, xp=np) == "lapack"  # nothing wider than float64
    assert svd_route((12, 7), np.float32, xp=np) == "lapack"           # tiny: LAPACK is instant
    # Square c x c: the rule is c**3 >= GRAM_MIN_WORK (2**20): 102**3 = 1,061,208, 101**3 = 1,030,301.
    assert GRAM_MIN_WORK == 2**20
    assert svd_route((102, 102), np.float32, xp=np) == "gram"
    assert svd_route((101, 101), np.float32, xp=np) == "lapack"
    assert svd_route((8, 16384), np.float32, xp=np) == "gram"  # 8 * 16384 * 8 = 2**20


def test_float64_and_tiny_weights_keep_lapack(rng):
    assert reduced_svd(rng.normal(size=(40, 600))).method == "lapack"
    assert reduced_svd(rng.normal(size=(12, 7)).astype(np.float32)).method == "lapack"
    assert reduced_svd(np.diag([3.0, 2.0, 1.0]).astype(np.float32), method="gram").method == "gram"


def test_half_precision_weight_gets_float32_factors(rng):
    f = reduced_svd(_weight(rng, 50, 600, kappa=10.0).astype(np.float16))
    assert f.method == "gram" and f.U.dtype == f.s.dtype == f.V.dtype == np.float32


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match=r"method must be one of \['auto', 'gram', 'lapack'\]; got 'qr'"):
        reduced_svd(np.eye(3), method="qr")
