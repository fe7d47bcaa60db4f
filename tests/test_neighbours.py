"""Nearest-neighbour label disagreement (beyond the paper): the vote equals scikit-learn's exact
neighbours on every backend, chunking changes nothing, the reference subsample votes among its own
rows, the flag/suggestion rule, and bad inputs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lip_agnostic.errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError
from lip_agnostic.neighbours import neighbour_disagreement


@pytest.fixture
def problem(rng):
    n, q, l = 300, 6, 4
    centres = rng.normal(size=(l, q)) * 3
    truth = rng.integers(0, l, n)
    X = centres[truth] + rng.normal(size=(n, q))
    y = truth.copy()
    flip = rng.random(n) < 0.25
    y[flip] = (y[flip] + 1 + rng.integers(0, l - 1, int(flip.sum()))) % l
    return X, y, truth, l


def sklearn_votes(X, y, l, k, metric, ref=None):
    nbrs = pytest.importorskip("sklearn.neighbors")
    ref = np.arange(X.shape[0]) if ref is None else np.asarray(ref)
    nn = nbrs.NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(X[ref])
    _, idx = nn.kneighbors(X)
    votes = np.zeros((X.shape[0], l))
    for i in range(X.shape[0]):
        cand = [j for j in ref[idx[i]] if j != i][:k]  # a row is not its own neighbour
        votes[i] = np.bincount(y[cand], minlength=l) / k
    return votes


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_votes_equal_sklearn_exact_neighbours(backend, problem, metric):
    X, y, _, l = problem
    got = neighbour_disagreement(backend.asarray(X), backend.asarray(y), l, k=7, metric=metric, chunk_size=64)
    np.testing.assert_allclose(backend.to_numpy(got.votes), sklearn_votes(X, y, l, 7, metric), atol=1e-12)
    assert got.n_reference == X.shape[0]


def test_chunk_size_changes_nothing(problem):
    X, y, _, l = problem
    a = neighbour_disagreement(X, y, l, k=5, chunk_size=1)
    b = neighbour_disagreement(X, y, l, k=5, chunk_size=10_000)
    np.testing.assert_array_equal(a.votes, b.votes)
    np.testing.assert_array_equal(a.flags, b.flags)


def test_reference_subsample_votes_among_its_rows(problem):
    X, y, _, l = problem
    got = neighbour_disagreement(X, y, l, k=5, reference=120, seed=3, metric="euclidean")
    ref = sorted(random.Random(3).sample(range(X.shape[0]), 120))
    np.testing.assert_allclose(got.votes, sklearn_votes(X, y, l, 5, "euclidean", ref), atol=1e-12)
    assert got.n_reference == 120 and "120 random reference rows" in got.method


def test_flag_and_suggestion_rule(backend, problem):
    X, y, truth, l = problem
    got = neighbour_disagreement(backend.asarray(X), backend.asarray(y), l, k=9)
    V = backend.to_numpy(got.votes)
    flags, sug, score = (backend.to_numpy(a) for a in (got.flags, got.suggested, got.score))
    np.testing.assert_allclose(score, V[np.arange(y.size), y])
    np.testing.assert_array_equal(flags, V.max(1) > score)
    np.testing.assert_array_equal(sug[flags], V[flags].argmax(1))
    np.testing.assert_array_equal(sug[~flags], y[~flags])
    # on well-separated clusters the vote finds the flips and suggests the true class
    flipped = y != truth
    assert np.mean(flags[flipped]) > 0.9 and np.mean(flags[~flipped]) < 0.05
    assert np.mean(sug[flipped] == truth[flipped]) > 0.9


@pytest.mark.parametrize("kwargs, err, msg", [
    ({"k": 0}, OptionError, r"k must be a positive int; got 0"),
    ({"k": 2.5}, OptionTypeError, r"k must be a positive int; got 2.5"),
    ({"k": 300}, OptionError, r"k=300 must be smaller than the 300 reference rows"),
    ({"metric": "manhattan"}, OptionError, r"metric must be one of \('cosine', 'euclidean'\); got 'manhattan'"),
    ({"chunk_size": 0}, OptionError, r"chunk_size must be a positive int; got 0"),
    ({"reference": 301}, OptionError, r"reference=301 exceeds the 300 rows"),
    ({"reference": True}, OptionTypeError, r"reference must be a positive int; got True"),
])
def test_bad_options(problem, kwargs, err, msg):
    X, y, _, l = problem
    with pytest.raises(err, match=msg):
        neighbour_disagreement(X, y, l, **kwargs)


def test_bad_arrays(problem):
    X, y, _, l = problem
    with pytest.raises(DataError, match=r"features must be 2-D \(n samples, q features\); got shape \(300,\)"):
        neighbour_disagreement(X[:, 0], y, l)
    with pytest.raises(DataTypeError, match=r"labels must be 1-D integer class labels; got shape \(300,\), dtype float64"):
        neighbour_disagreement(X, y.astype(float), l)
    with pytest.raises(DataError, match=r"features has 300 rows but labels has 299"):
        neighbour_disagreement(X, y[:-1], l)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\) for n_classes=3; got min 0, max 3"):
        neighbour_disagreement(X, y, 3)
    with pytest.raises(OptionError, match=r"n_classes must be an int >= 2; got 1"):
        neighbour_disagreement(X, y, 1)
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"features contains 1 NaN/Inf value"):
        neighbour_disagreement(bad, y, l)


def test_kth_smallest_counts_ties_on_every_backend(backend, rng):
    from lip_agnostic._arrays import kth_smallest

    D = np.round(rng.normal(size=(40, 30)), 1)  # rounded: many ties within a row
    D[0] = 0.5  # a row of one value
    for k in (1, 3, 10, 30):
        got = backend.to_numpy(kth_smallest(backend.xp, backend.asarray(D), k))
        np.testing.assert_array_equal(got, np.sort(D, axis=1)[:, k - 1:k])


def test_tied_references_all_vote(backend):
    # query 0 sits at one point, two references duplicate the same point: both are at the smallest
    # distance, so with k=2 exactly those two vote (the 2nd smallest counted with multiplicity)
    from lip_agnostic.neighbours import ReferenceVote

    R = np.array([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    ref = ReferenceVote(backend.asarray(R), backend.asarray(np.array([1, 1, 0, 0])), backend.asarray(np.arange(4)),
                        2, k=2)
    V = backend.to_numpy(ref.votes(backend.asarray(np.array([[2.0, 0.0]])), backend.asarray(np.array([99]))))
    np.testing.assert_allclose(V, [[0.0, 1.0]])
