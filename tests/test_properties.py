"""Property-based checks (hypothesis) of the core's invariants on random shapes and data."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lip_agnostic import lip_refine, LIPAccumulator, project_principal

from lip_agnostic.metrics import principal_angles, subspace_similarity

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def weights(draw):
    q = draw(st.integers(2, 12))
    l = draw(st.integers(2, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return rng.normal(size=(q, l)) * rng.uniform(0.1, 10.0), seed


@SETTINGS
@given(weights(), st.data())
def test_projection_invariants(wseed, data):
    W, _ = wseed
    m = min(W.shape)
    k = data.draw(st.integers(0, m))
    P = project_principal(W, k)
    assert np.linalg.matrix_rank(P, tol=1e-9 * max(1.0, np.abs(W).max())) <= k
    np.testing.assert_allclose(project_principal(P, k), P, atol=1e-9 * max(1.0, np.abs(W).max()))
    assert np.linalg.norm(W - P) <= np.linalg.norm(W) + 1e-12


@SETTINGS
@given(weights(), st.data())
def test_lip_never_fits_the_targets_worse_than_the_head_alone(wseed, data):
    W, seed = wseed
    q, l = W.shape
    rng = np.random.default_rng(seed + 1)
    n = data.draw(st.integers(1, 60))
    X = rng.normal(size=(n, q))
    y = rng.integers(0, l, n)
    Y = np.eye(l)[y]
    k = data.draw(st.integers(0, min(q, l)))
    Ws = lip_refine(W, X, y, k)
    head = project_principal(W, k)
    # W* minimizes the objective over all tail sigmas, and sigma = 0 is one choice: the head alone.
    assert np.sum((X @ Ws - Y) ** 2) <= np.sum((X @ head - Y) ** 2) + 1e-8
    assert np.all(np.isfinite(Ws))
    # Streaming in two arbitrary pieces gives the same result.
    cut = data.draw(st.integers(0, n))
    acc = LIPAccumulator(W, k)
    for a, b in ((0, cut), (cut, n)):
        if b > a:
            acc.update(X[a:b], y[a:b])
    np.testing.assert_allclose(acc.result(), Ws, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(st.integers(2, 10), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_angles_are_in_range_and_invariant(n, p1, p2, seed):
    rng = np.random.default_rng(seed)
    p1, p2 = min(p1, n), min(p2, n)
    A, B = rng.normal(size=(n, p1)), rng.normal(size=(n, p2))
    th = principal_angles(A, B)
    assert th.shape == (min(p1, p2),)
    assert np.all(th >= 0) and np.all(th <= math.pi / 2 + 1e-12)
    R = np.linalg.qr(rng.normal(size=(p1, p1)))[0]
    np.testing.assert_allclose(principal_angles(A @ R, B), th, atol=1e-7)
    Qa, Qb = np.linalg.qr(A)[0], np.linalg.qr(B)[0]
    phi = subspace_similarity(Qa, Qb, p1, p2)
    # phi = sum cos^2(theta) / min(i, j)
    assert abs(float(phi) - np.sum(np.cos(th) ** 2) / min(p1, p2)) < 1e-9
