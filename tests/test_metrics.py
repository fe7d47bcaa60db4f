"""Subspace and spectrum metrics: invariants on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lip_agnostic.metrics import davis_kahan_bound, effective_rank, grassmann_distance, orthonormal_basis, principal_angles, principal_subspace_angle, singular_spectrum, stable_rank, subspace_similarity, subspace_similarity_matrix

from lip_agnostic import summarize_change


def _orth(rng, n, p):
    return np.linalg.qr(rng.normal(size=(n, p)))[0]


def test_angles_with_itself_are_zero_and_with_an_orthogonal_subspace_pi_over_2(backend, rng):
    Q = _orth(rng, 10, 6)
    A, B = Q[:, :3], Q[:, 3:]
    np.testing.assert_allclose(backend.to_numpy(principal_angles(backend.asarray(A), backend.asarray(A))), 0.0, atol=1e-7)
    np.testing.assert_allclose(backend.to_numpy(principal_angles(backend.asarray(A), backend.asarray(B))), math.pi / 2, atol=1e-7)


def test_angles_are_sign_and_rotation_invariant_and_work_on_raw_matrices(backend, rng):
    A = rng.normal(size=(9, 3))
    B = rng.normal(size=(9, 4))
    ref = backend.to_numpy(principal_angles(backend.asarray(A), backend.asarray(B)))
    R = _orth(rng, 3, 3)
    flipped = -A @ R @ np.diag([1.0, 5.0, -2.0])  # same column space
    got = backend.to_numpy(principal_angles(backend.asarray(flipped), backend.asarray(B)))
    np.testing.assert_allclose(got, ref, atol=1e-10)
    assert ref.shape == (3,) and np.all(np.diff(ref) >= -1e-12)
    assert np.all((ref >= 0) & (ref <= math.pi / 2))
    # symmetric in its arguments
    np.testing.assert_allclose(backend.to_numpy(principal_angles(backend.asarray(B), backend.asarray(A))), ref, atol=1e-10)


def test_small_angles_are_accurate(backend):
    t = 1e-9
    A = np.array([[1.0], [0.0]])
    B = np.array([[math.cos(t)], [math.sin(t)]])
    got = float(backend.to_numpy(principal_angles(backend.asarray(A), backend.asarray(B)))[0])
    assert got == pytest.approx(t, rel=1e-6)  # arccos alone would give 0


def test_known_angle_between_planes(backend):
    t = 0.3
    A = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    B = np.array([[1.0, 0.0], [0.0, math.cos(t)], [0.0, math.sin(t)]])
    got = backend.to_numpy(principal_angles(backend.asarray(A), backend.asarray(B)))
    np.testing.assert_allclose(got, [0.0, t], atol=1e-12)
    assert float(backend.to_numpy(grassmann_distance(backend.asarray(A), backend.asarray(B)))) == pytest.approx(t)


def test_rank_deficient_input_uses_its_true_column_space(backend):
    A = np.array([[1.0, 2.0], [2.0, 4.0], [0.0, 0.0]])
    assert tuple(orthonormal_basis(backend.asarray(A)).shape) == (3, 1)


def test_principal_subspace_angle_of_rescaled_weight_is_zero(backend, rng):
    W = rng.normal(size=(12, 5))
    for side in ("left", "right"):
        assert float(backend.to_numpy(principal_subspace_angle(backend.asarray(W), backend.asarray(3.0 * W), 3, side=side))) < 1e-6
    assert float(backend.to_numpy(principal_subspace_angle(backend.asarray(W), backend.asarray(W), 0))) == 0.0


def test_phi_is_in_unit_interval_and_one_for_nested_subspaces(backend, rng):
    V1, V2 = _orth(rng, 8, 8), _orth(rng, 8, 8)
    for i in (1, 3, 8):
        for j in (2, 5):
            phi = float(backend.to_numpy(subspace_similarity(backend.asarray(V1), backend.asarray(V2), i, j)))
            assert -1e-12 <= phi <= 1 + 1e-12
    assert float(backend.to_numpy(subspace_similarity(backend.asarray(V1), backend.asarray(V1), 2, 5))) == pytest.approx(1.0)
    assert float(backend.to_numpy(subspace_similarity(backend.asarray(V1), backend.asarray(V1 @ np.diag([-1.0] * 8)), 3, 3))) == pytest.approx(1.0)


def test_phi_matrix_equals_pointwise_phi(backend, rng):
    V1, V2 = _orth(rng, 7, 5), _orth(rng, 7, 4)
    M = backend.to_numpy(subspace_similarity_matrix(backend.asarray(V1), backend.asarray(V2)))
    assert M.shape == (5, 4)
    for i in range(1, 6):
        for j in range(1, 5):
            assert M[i - 1, j - 1] == pytest.approx(float(subspace_similarity(V1, V2, i, j)), abs=1e-12)


def test_spectrum_effective_and_stable_rank(backend):
    I = backend.asarray(np.eye(5))
    assert float(backend.to_numpy(effective_rank(I))) == pytest.approx(5.0)
    assert float(backend.to_numpy(stable_rank(I))) == pytest.approx(5.0)
    D = backend.asarray(np.diag([4.0, 0.0, 0.0]))
    assert float(backend.to_numpy(effective_rank(D))) == pytest.approx(1.0)
    np.testing.assert_allclose(backend.to_numpy(singular_spectrum(backend.asarray(np.diag([1.0, 3.0])))), [3.0, 1.0])
    assert float(backend.to_numpy(effective_rank(backend.asarray(np.zeros((3, 3)))))) == 0.0
    s = backend.asarray(np.array([2.0, 1.0, 1.0]))  # a 1-D input is read as a spectrum
    p = np.array([0.5, 0.25, 0.25])
    assert float(backend.to_numpy(effective_rank(s))) == pytest.approx(math.exp(-np.sum(p * np.log(p))))
    assert float(backend.to_numpy(stable_rank(s))) == pytest.approx(6.0 / 4.0)


def test_effective_rank_lies_between_one_and_m(rng):
    for _ in range(5):
        W = rng.normal(size=(9, 6)) * rng.random(6)
        assert 1.0 <= float(effective_rank(W)) <= 6.0 + 1e-12


def test_davis_kahan_bound_formula_and_vacuity():
    X = np.diag([2.0, 1.0])
    # sigma_max = 2, lambda_min(X^T X) = 1, n = 2, l = 3
    got = davis_kahan_bound(X, 0.25, n_classes=3, gap=0.5, ridge=1.0)
    assert got == pytest.approx(2 * math.sqrt(6) / (0.5 * 2.0) * 0.5)
    assert davis_kahan_bound(np.ones((1, 3)), 0.1, n_classes=2, gap=1.0) == math.inf
    assert davis_kahan_bound(X, 0.0, n_classes=3, gap=0.5) == 0.0


def test_summarize_change_reports_spectra_and_angle(rng):
    W = rng.normal(size=(10, 4))
    from lip_agnostic import project_principal

    P = project_principal(W, 2)
    s = summarize_change(W, P, 2)
    assert s.k == 2 and s.shape == (10, 4)
    assert s.top_k_angle < 1e-6 and s.kept_unchanged and s.kept_relative_change < 1e-12
    assert s.spectrum_after[2] < 1e-9 and s.spectrum_before[2] > 0.1
    assert 0 < s.relative_change < 1
    assert s.to_dict()["shape"] == [10, 4]


@pytest.mark.parametrize(
    "call, exc, msg",
    [
        (lambda: principal_angles(np.ones(3), np.ones((3, 1))), ValueError, r"A must be 2-D .*got shape \(3,\)"),
        (lambda: principal_angles(np.ones((3, 1)), np.ones((4, 1))), ValueError, r"same space .* got \(3, 1\) and \(4, 1\)"),
        (lambda: principal_angles(np.ones((3, 1), dtype=int), np.ones((3, 1))), TypeError, r"A must have a real floating dtype"),
        (lambda: principal_angles(np.full((3, 1), np.nan), np.ones((3, 1))), ValueError, r"A contains 3 NaN/Inf"),
        (lambda: subspace_similarity(np.eye(3), np.eye(3), 0, 1), ValueError, r"i must be an integer in \[1, 3\]; got 0"),
        (lambda: subspace_similarity(np.eye(3), np.eye(3), 1, 4), ValueError, r"j must be an integer in \[1, 3\]; got 4"),
        (lambda: subspace_similarity(np.eye(3), np.eye(4), 1, 1), ValueError, r"same number of rows; got \(3, 3\) and \(4, 4\)"),
        (lambda: principal_subspace_angle(np.eye(3), np.eye(4), 1), ValueError, r"same shape; got \(3, 3\) and \(4, 4\)"),
        (lambda: principal_subspace_angle(np.eye(3), np.eye(3), 4), ValueError, r"k must be an integer in \[0, 3\]; got 4"),
        (lambda: principal_subspace_angle(np.eye(3), np.eye(3), 1, side="up"), ValueError, r"side must be 'left' or 'right'; got 'up'"),
        (lambda: effective_rank(np.array([1.0, -1.0])), ValueError, r"non-negative singular values"),
        (lambda: davis_kahan_bound(np.eye(2), 1.5, n_classes=2, gap=1.0), ValueError, r"noise_rate must lie in \[0, 1\]; got 1.5"),
        (lambda: davis_kahan_bound(np.eye(2), 0.1, n_classes=0, gap=1.0), ValueError, r"n_classes must be a positive integer; got 0"),
        (lambda: davis_kahan_bound(np.eye(2), 0.1, n_classes=2, gap=0.0), ValueError, r"gap \(delta\) must be positive; got 0.0"),
        (lambda: davis_kahan_bound(np.eye(2), 0.1, n_classes=2, gap=1.0, ridge=-1.0), ValueError, r"ridge \(lambda\) must be non-negative"),
        (lambda: summarize_change(np.eye(3), np.eye(4), 1), ValueError, r"same shape; got \(3, 3\) and \(4, 4\)"),
    ],
)
def test_metric_bad_inputs(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_davis_kahan_bound_accepts_precomputed_singular_values(rng):
    X = rng.normal(size=(30, 5))
    s = np.linalg.svd(X, compute_uv=False)
    assert davis_kahan_bound(X, 0.2, n_classes=3, gap=0.7, ridge=0.1, singular_values=s) == pytest.approx(
        davis_kahan_bound(X, 0.2, n_classes=3, gap=0.7, ridge=0.1))
    with pytest.raises(ValueError, match=r"singular_values must have shape \(5,\) for X of shape \(30, 5\); got \(4,\)"):
        davis_kahan_bound(X, 0.2, n_classes=3, gap=0.7, singular_values=s[:4])
