"""Confident learning in array-API (beyond the paper): the flags and the calibrated confident joint
agree with cleanlab's ``find_label_issues`` / ``compute_confident_joint`` on the same probabilities,
every backend gives NumPy's answer, the rounding keeps row totals, and bad inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lip_agnostic.confident_learning import confident_joint, confident_learning, round_preserving_row_totals
from lip_agnostic.errors import DataError, DataTypeError, NonFiniteError


def noisy_problem(seed):
    """Softmax probabilities of a noisy-label problem: l classes, a share of labels replaced at random."""
    rng = np.random.default_rng(seed)
    n, l = int(rng.integers(80, 2500)), int(rng.integers(2, 24))
    truth = rng.integers(0, l, n)
    y = truth.copy()
    flip = rng.random(n) < rng.uniform(0.05, 0.5)
    y[flip] = rng.integers(0, l, int(flip.sum()))
    Z = rng.normal(size=(n, l)) * rng.uniform(0.3, 3.0) + np.eye(l)[truth] * rng.uniform(0.5, 4.0)
    P = np.exp(Z - Z.max(1, keepdims=True))
    return P / P.sum(1, keepdims=True), y


def cleanlab_answers(P, y):
    filt = pytest.importorskip("cleanlab.filter")
    count = pytest.importorskip("cleanlab.count")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return filt.find_label_issues(y, P, n_jobs=1), count.compute_confident_joint(y, P)


@pytest.fixture
def stable_numpy_argsort(monkeypatch):
    """cleanlab breaks ties with NumPy's default argsort, which is not stable (its SIMD kernels order equal
    keys differently by CPU); with a stable argsort cleanlab's rule is deterministic and is ours."""
    orig = np.argsort

    def stable(a, axis=-1, kind=None, order=None, **kw):
        return orig(a, axis=axis, kind="stable", order=order, **kw)

    monkeypatch.setattr(np, "argsort", stable)


@pytest.mark.parametrize("seed", range(12))
def test_flags_and_joint_equal_cleanlabs_with_a_stable_sort(stable_numpy_argsort, seed):
    P, y = noisy_problem(seed)
    ref_flags, ref_joint = cleanlab_answers(P, y)
    got = confident_learning(P, y)
    np.testing.assert_array_equal(got.joint, ref_joint)
    np.testing.assert_array_equal(got.flags, ref_flags)


def _calibrated_before_rounding(P, y):
    """cleanlab's calibrated joint before the row rounding (to see where the rounding met ties)."""
    count = pytest.importorskip("cleanlab.count")
    C = count.compute_confident_joint(y, P, calibrate=False).astype(float)
    c = np.bincount(y, minlength=P.shape[1])
    cal = C / C.sum(1, keepdims=True) * c[:, None]
    return cal / cal.sum() * c.sum()


@pytest.mark.parametrize("seed", range(12))
def test_flags_agree_with_cleanlab_as_installed_except_after_rounding_ties(seed):
    P, y = noisy_problem(seed)
    ref_flags, ref_joint = cleanlab_answers(P, y)
    got = confident_learning(P, y)
    differ = np.any(got.joint != ref_joint, axis=1)
    frac = _calibrated_before_rounding(P, y)
    frac = frac - np.round(frac)
    for k in np.flatnonzero(differ):  # only a row whose rounding had to choose between equal losses
        assert len(np.unique(frac[k])) < frac.shape[1], (k, frac[k])
        assert got.joint[k].sum() == ref_joint[k].sum()
    if not differ.any():
        np.testing.assert_array_equal(got.flags, ref_flags)


def test_every_backend_gives_numpys_answer(backend):
    P, y = noisy_problem(3)
    ref = confident_learning(P, y)
    got = confident_learning(backend.asarray(P), backend.asarray(y))
    for name in ("flags", "score", "suggested", "thresholds", "joint", "prune_counts"):
        np.testing.assert_allclose(backend.to_numpy(getattr(got, name)), getattr(ref, name), rtol=1e-12,
                                   err_msg=name)


def test_invariants(backend):
    P, y = noisy_problem(5)
    got = confident_learning(backend.asarray(P), backend.asarray(y))
    flags = backend.to_numpy(got.flags)
    sug = backend.to_numpy(got.suggested)
    assert flags.any()
    assert np.all(sug[flags] != y[flags])  # a flagged row is never suggested its own label
    np.testing.assert_allclose(backend.to_numpy(got.score), P[np.arange(y.size), y])
    assert backend.to_numpy(got.joint).sum() == y.size
    np.testing.assert_array_equal(backend.to_numpy(got.joint).sum(1), np.bincount(y, minlength=P.shape[1]))
    ranked = backend.to_numpy(got.ranked())
    assert set(ranked.tolist()) == set(np.flatnonzero(flags).tolist())
    assert np.all(np.diff(P[ranked, y[ranked]]) >= 0)


def test_clean_confident_probabilities_flag_nothing(backend):
    y = np.tile(np.arange(4), 30)
    P = np.full((y.size, 4), 0.02)
    P[np.arange(y.size), y] = 0.94
    got = confident_learning(backend.asarray(P), backend.asarray(y))
    assert got.n_flagged == 0


def test_rounding_keeps_row_totals(backend, rng):
    A = rng.random((7, 9)) * 20
    A[2] = [0.5, 0.5, 0.5, 0.5, 1.0, 0, 0, 0, 0]  # ties and half-way values
    R = backend.to_numpy(round_preserving_row_totals(backend.asarray(A)))
    np.testing.assert_array_equal(R, np.round(R))
    np.testing.assert_array_equal(R.sum(1), np.round(A.sum(1)))
    assert np.all(np.abs(R - A) < 1.0)


def test_confident_joint_alone_equals_the_one_in_the_result():
    P, y = noisy_problem(7)
    C, t = confident_joint(P, y)
    got = confident_learning(P, y)
    np.testing.assert_array_equal(C, got.joint)
    np.testing.assert_array_equal(t, got.thresholds)


@pytest.mark.parametrize("probs, labels, err, msg", [
    (np.full(4, 0.5), np.zeros(4, int), DataError, r"probs must be 2-D \(n samples, l classes\); got shape \(4,\)"),
    (np.full((4, 2), 1), np.zeros(4, int), DataTypeError, r"probs must have a real floating dtype; got int64"),
    (np.full((4, 1), 1.0), np.zeros(4, int), DataError, r"probs must have at least one row and two classes; got shape \(4, 1\)"),
    (np.full((4, 2), 0.5), np.zeros(4), DataTypeError, r"labels must be 1-D integer class labels; got shape \(4,\), dtype float64"),
    (np.full((4, 2), 0.5), np.zeros(3, int), DataError, r"probs has 4 rows but labels has 3"),
    (np.full((4, 2), 0.5), np.array([0, 1, 2, 0]), DataError, r"labels must lie in \[0, 2\) for 2 classes; got min 0, max 2"),
    (np.array([[0.5, np.nan]] * 4), np.zeros(4, int), NonFiniteError, r"probs contains 4 NaN/Inf value\(s\)"),
    (np.array([[1.5, -0.5]] * 4), np.zeros(4, int), DataError, r"probs must lie in \[0, 1\] \(softmax probabilities\); got min -0.5, max 1.5"),
])
def test_bad_inputs(probs, labels, err, msg):
    with pytest.raises(err, match=msg):
        confident_learning(probs, labels)
    with pytest.raises(err, match=msg):
        confident_joint(probs, labels)


@pytest.mark.parametrize("ridge", [1e-3, 0.1])
def test_end_to_end_on_digits_equals_cleanlab(stable_numpy_argsort, ridge):
    """Out-of-fold ridge scores, a temperature fit on held-out rows, then the flags: cleanlab's on the same
    probabilities. (ridge=1e-3 puts a calibrated entry exactly on k + 0.5, where the rounding follows the
    last bit of cleanlab's column-major sum.)"""
    datasets = pytest.importorskip("sklearn.datasets")
    from lip_agnostic.noise import symmetric_noise
    from lip_agnostic.out_of_fold import out_of_fold_scores
    from lip_agnostic.temperature import fit_temperature, softmax

    split = pytest.importorskip("sklearn.model_selection")
    d = datasets.load_digits()
    X = (d.data / 16.0).astype(np.float32).astype(np.float64)
    Xf, Xt, yf, yt = split.train_test_split(X, d.target, test_size=0.3, random_state=0, stratify=d.target)
    yf = symmetric_noise(yf, 0.4, 10, seed=1).labels
    half = Xt.shape[0] // 2
    Xv, yv = Xt[:half], symmetric_noise(yt[:half], 0.4, 10, seed=2).labels
    oof = out_of_fold_scores([(Xf[a:a + 512], yf[a:a + 512]) for a in range(0, yf.size, 512)], 10, ridge=ridge)
    T = fit_temperature(oof.heads.full_logits(Xv), yv)
    P = softmax(oof.logits, scale=T.scale)
    ref_flags, ref_joint = cleanlab_answers(P, yf)
    got = confident_learning(P, yf)
    np.testing.assert_array_equal(got.joint, ref_joint)
    np.testing.assert_array_equal(got.flags, ref_flags)
