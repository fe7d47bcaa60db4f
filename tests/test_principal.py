"""Principal Subspace Preservation: the rank-k truncation, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

from lip_agnostic.svd import energy_rank, top_svd

from lip_agnostic import project_principal, reduced_svd


def _w(rng, q=12, l=7):
    return rng.normal(size=(q, l))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reduced_svd_factors_are_orthonormal_and_reconstruct(backend, rng, dtype):
    W = backend.asarray(_w(rng), dtype)
    f = reduced_svd(W)
    U, s, V = (backend.to_numpy(a) for a in (f.U, f.s, f.V))
    tol = 1e-4 if dtype == "float32" else 1e-10
    assert U.shape == (12, 7) and V.shape == (7, 7) and s.shape == (7,)
    np.testing.assert_allclose(U.T @ U, np.eye(7), atol=tol)
    np.testing.assert_allclose(V.T @ V, np.eye(7), atol=tol)
    assert np.all(np.diff(s) <= tol)
    np.testing.assert_allclose((U * s) @ V.T, backend.to_numpy(W), atol=tol * 10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_projection_is_idempotent_rank_k_and_keeps_type(backend, rng, dtype):
    W = backend.asarray(_w(rng), dtype)
    P = project_principal(W, 3)
    assert type(P) is type(W)
    assert P.dtype == W.dtype
    Pn = backend.to_numpy(P)
    assert np.linalg.matrix_rank(Pn, tol=1e-3) == 3
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(backend.to_numpy(project_principal(P, 3)), Pn, atol=tol)


def test_projection_is_the_best_rank_k_approximation(backend, rng):
    Wn = _w(rng)
    P = backend.to_numpy(project_principal(backend.asarray(Wn), 2))
    s = np.linalg.svd(Wn, compute_uv=False)
    # Eckart-Young: the error of the best rank-k approximation is sqrt(sum of the tail s^2).
    np.testing.assert_allclose(np.linalg.norm(Wn - P), np.sqrt(np.sum(s[2:] ** 2)), rtol=1e-10)


def test_full_rank_returns_w_bit_for_bit_and_zero_rank_returns_zeros(backend, rng):
    Wn = _w(rng)
    W = backend.asarray(Wn)
    np.testing.assert_array_equal(backend.to_numpy(project_principal(W, 7)), Wn)
    np.testing.assert_array_equal(backend.to_numpy(project_principal(W, 0)), np.zeros_like(Wn))


def test_energy_fraction_picks_the_smallest_k_reaching_it(backend):
    W = backend.asarray(np.diag([3.0, 2.0, 1.0]))  # energies 9, 4, 1 of 14
    assert energy_rank(backend.asarray(np.array([3.0, 2.0, 1.0])), 0.6) == 1
    assert energy_rank(backend.asarray(np.array([3.0, 2.0, 1.0])), 0.9) == 2
    assert energy_rank(backend.asarray(np.array([3.0, 2.0, 1.0])), 1.0) == 3
    np.testing.assert_allclose(backend.to_numpy(project_principal(W, 0.9)), np.diag([3.0, 2.0, 0.0]), atol=1e-12)


def test_energy_rank_of_zero_spectrum_is_zero(backend):
    assert energy_rank(backend.asarray(np.zeros(4)), 0.5) == 0


def test_half_precision_is_refined_in_float32_and_returned_in_its_dtype(rng):
    torch = pytest.importorskip("torch")
    W = torch.from_numpy(_w(rng).astype(np.float32)).to(torch.bfloat16)
    P = project_principal(W, 2)
    assert P.dtype == torch.bfloat16
    assert reduced_svd(W).s.dtype == torch.float32


def test_randomized_truncation_matches_the_full_one_on_a_decaying_spectrum(backend, rng):
    U, _ = np.linalg.qr(rng.normal(size=(60, 30)))
    V, _ = np.linalg.qr(rng.normal(size=(40, 30)))
    Wn = (U * (0.7 ** np.arange(30))) @ V.T
    W = backend.asarray(Wn)
    full = backend.to_numpy(project_principal(W, 4))
    rand = backend.to_numpy(project_principal(W, 4, method="randomized"))
    np.testing.assert_allclose(rand, full, atol=1e-9)
    f = top_svd(W, 4).svd
    Uf = backend.to_numpy(f.U)
    np.testing.assert_allclose(Uf.T @ Uf, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(f.s), 0.7 ** np.arange(4), rtol=1e-9)


def test_randomized_is_deterministic_per_seed(rng):
    W = rng.normal(size=(50, 40))
    a, b = top_svd(W, 3, seed=1, max_iter=1), top_svd(W, 3, seed=1, max_iter=1)
    np.testing.assert_array_equal(a.svd.s, b.svd.s)


@pytest.mark.parametrize(
    "make, k, exc, msg",
    [
        (lambda: np.ones(5), 1, ValueError, r"2-D weight matrix.*got shape \(5,\)"),
        (lambda: np.ones((2, 3, 4)), 1, ValueError, r"2-D weight matrix.*\(2, 3, 4\)"),
        (lambda: np.ones((4, 3)), 4, ValueError, r"k must lie in \[0, min\(q, l\)=3\]; got 4"),
        (lambda: np.ones((4, 3)), -1, ValueError, r"k must lie in \[0, min\(q, l\)=3\]; got -1"),
        (lambda: np.ones((4, 3)), "2", TypeError, r"k must be an int or an energy fraction in \(0, 1\]; got '2' \(str\)"),
        (lambda: np.ones((4, 3)), True, TypeError, r"k must be an int or an energy fraction in \(0, 1\]; got True \(bool\)"),
        (lambda: np.ones((4, 3)), 1.5, ValueError, r"energy fraction must lie in \(0, 1\]; got 1.5"),
        (lambda: np.array([[1.0, np.nan], [0.0, 1.0]]), 1, ValueError, r"W contains 1 NaN/Inf value\(s\) \(shape \(2, 2\)\)"),
        (lambda: np.array([[1.0, np.inf], [0.0, -np.inf]]), 1, ValueError, r"W contains 2 NaN/Inf"),
        (lambda: np.ones((4, 3), dtype=np.int64), 1, TypeError, r"real floating dtype; got .*int64"),
        (lambda: np.ones((0, 3)), 0, ValueError, r"non-empty; got shape \(0, 3\)"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_message(backend, make, k, exc, msg):
    W = backend.asarray(make())
    with pytest.raises(exc, match=msg):
        project_principal(W, k)


def test_bad_method_and_randomized_with_energy_are_refused(rng):
    W = rng.normal(size=(5, 4))
    with pytest.raises(ValueError, match="method must be 'full' or 'randomized'; got 'qr'"):
        project_principal(W, 2, method="qr")
    with pytest.raises(ValueError, match="oversample must be a non-negative integer; got -1"):
        top_svd(W, 2, oversample=-1)


def test_randomized_energy_fraction_matches_the_full_one(rng):
    U, _ = np.linalg.qr(rng.normal(size=(200, 60)))
    V, _ = np.linalg.qr(rng.normal(size=(120, 60)))
    W = (U * (0.8 ** np.arange(60))) @ V.T
    np.testing.assert_allclose(project_principal(W, 0.9, method="randomized"), project_principal(W, 0.9), atol=1e-8)
