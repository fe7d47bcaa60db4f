"""Out-of-fold scores from per-fold ridge statistics (beyond the paper): equal to an explicit
K-fold ridge refit, streaming = batch, merge / all-reduce = one pass over the union, a row's
score never depends on its own label, the replay check, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from lip_agnostic.errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError
from lip_agnostic.out_of_fold import OutOfFoldAccumulator, out_of_fold_scores


def ridge_fit(X, T, ridge):
    """Ridge with an unpenalised intercept, solved from centred data (NumPy reference)."""
    mx, mt = X.mean(0), T.mean(0)
    Xc, Tc = X - mx, T - mt
    lam = ridge * np.trace(Xc.T @ Xc) / X.shape[1]
    W = np.linalg.solve(Xc.T @ Xc + lam * np.eye(X.shape[1]), Xc.T @ Tc)
    return W, mt - mx @ W


def kfold_reference(X, T, K, ridge, start=0):
    """Explicit K-fold refit: fold of row i is (start + i) mod K; each fold scored by the head fit without it."""
    fold = (start + np.arange(X.shape[0])) % K
    Z = np.zeros(T.shape)
    for f in range(K):
        out = fold == f
        W, b = ridge_fit(X[~out], T[~out], ridge)
        Z[out] = X[out] @ W + b
    return Z


@pytest.fixture
def problem(rng):
    n, q, l = 157, 7, 4
    X = rng.normal(size=(n, q)) + 0.7  # not centred: the bias refit matters
    y = rng.integers(0, l, n)
    return X, y, l


def batches_of(backend, X, Y, cuts):
    edges = [0, *cuts, X.shape[0]]
    return [(backend.asarray(X[a:b]), backend.asarray(Y[a:b])) for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("K", [2, 5])
def test_out_of_fold_equals_explicit_kfold_refit(backend, problem, K):
    X, y, l = problem
    got = out_of_fold_scores(batches_of(backend, X, y, [40, 41, 99]), l, folds=K, ridge=0.03)
    ref = kfold_reference(X, np.eye(l)[y], K, 0.03)
    np.testing.assert_allclose(backend.to_numpy(got.logits), ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_array_equal(backend.to_numpy(got.labels), y)
    # the head on all rows is the same ridge on every row
    W, b = ridge_fit(X, np.eye(l)[y], 0.03)
    np.testing.assert_allclose(backend.to_numpy(got.heads.full_logits(backend.asarray(X))), X @ W + b,
                               rtol=1e-9, atol=1e-10)


def test_soft_targets_equal_explicit_refit(backend, problem, rng):
    X, _, l = problem
    T = rng.dirichlet(np.ones(l), size=X.shape[0])
    got = out_of_fold_scores(batches_of(backend, X, T, [60]), l, folds=3, ridge=0.1)
    np.testing.assert_allclose(backend.to_numpy(got.logits), kfold_reference(X, T, 3, 0.1), rtol=1e-9, atol=1e-10)
    assert got.labels is None


def test_a_rows_score_does_not_depend_on_its_own_label(problem):
    X, y, l = problem
    K = 4
    base = out_of_fold_scores([(X, y)], l, folds=K).logits
    fold = np.arange(X.shape[0]) % K
    y2 = y.copy()
    y2[fold == 1] = (y2[fold == 1] + 1) % l  # relabel every row of fold 1
    moved = out_of_fold_scores([(X, y2)], l, folds=K).logits
    np.testing.assert_allclose(moved[fold == 1], base[fold == 1], rtol=1e-10, atol=1e-12)
    assert not np.allclose(moved[fold != 1], base[fold != 1])


def test_streaming_equals_batch(backend, problem):
    X, y, l = problem
    one = OutOfFoldAccumulator(l, folds=5).update(backend.asarray(X), backend.asarray(y))
    many = OutOfFoldAccumulator(l, folds=5)
    for Xb, yb in batches_of(backend, X, y, [1, 2, 33, 34, 120]):
        many.update(Xb, yb)
    np.testing.assert_allclose(backend.to_numpy(many.partial_sums), backend.to_numpy(one.partial_sums),
                               rtol=1e-12, atol=1e-9)
    assert many.fold_sizes == one.fold_sizes == (32, 32, 31, 31, 31)


def test_merge_and_all_reduce_equal_one_pass_over_the_union(backend, problem):
    X, y, l = problem
    a = 63  # not a multiple of K: the second worker's folds start mid-cycle
    one = OutOfFoldAccumulator(l, folds=5).update(backend.asarray(X), backend.asarray(y))
    w0 = OutOfFoldAccumulator(l, folds=5).update(backend.asarray(X[:a]), backend.asarray(y[:a]))
    w1 = OutOfFoldAccumulator(l, folds=5, start=a).update(backend.asarray(X[a:]), backend.asarray(y[a:]))
    reduced = w0.partial_sums + w1.partial_sums
    merged = OutOfFoldAccumulator(l, folds=5).merge(w0).merge(w1)
    w0.load_partial_sums(reduced)
    for acc in (merged, w0):
        np.testing.assert_allclose(backend.to_numpy(acc.partial_sums), backend.to_numpy(one.partial_sums),
                                   rtol=1e-12, atol=1e-9)
    # each worker scores its own rows with the reduced heads: together, the one-pass scores
    heads = w0.heads()
    z0 = heads.logits(backend.asarray(X[:a]), position=0)
    z1 = heads.logits(backend.asarray(X[a:]), position=a)
    ref = one.heads().logits(backend.asarray(X), position=0)
    np.testing.assert_allclose(np.concatenate([backend.to_numpy(z0), backend.to_numpy(z1)]), backend.to_numpy(ref),
                               rtol=1e-9, atol=1e-10)


def test_float32_features_give_float32_scores(problem):
    X, y, l = problem
    got = out_of_fold_scores([(X.astype(np.float32), y)], l, folds=5, ridge=0.03)
    assert got.logits.dtype == np.float32
    ref = kfold_reference(X.astype(np.float32).astype(np.float64), np.eye(l)[y], 5, 0.03)
    np.testing.assert_allclose(got.logits, ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ the second pass
def test_one_shot_generator_is_refused_before_reading(problem):
    X, y, l = problem
    read = []

    def gen():
        read.append(1)
        yield X, y

    with pytest.raises(DataTypeError, match=r"batches is a one-shot generator: out-of-fold scores need two passes"):
        out_of_fold_scores(gen(), l)
    assert read == []
    with pytest.raises(DataTypeError, match=r"batches is a one-shot list_iterator"):
        out_of_fold_scores(iter([(X, y)]), l)
    with pytest.raises(DataTypeError, match=r"batches must be a re-iterable source of \(X, Y\) batches.*got int"):
        out_of_fold_scores(3, l)


class Reshuffled:
    """A source that yields the same rows in another order on its second pass (a shuffling loader)."""

    def __init__(self, X, y):
        self.X, self.y, self.calls = X, y, 0

    def __iter__(self):
        self.calls += 1
        order = np.arange(self.X.shape[0]) if self.calls == 1 else np.random.default_rng(0).permutation(self.X.shape[0])
        for a in range(0, self.X.shape[0], 50):
            idx = order[a:a + 50]
            yield self.X[idx], self.y[idx]


class Truncated(Reshuffled):
    def __iter__(self):
        self.calls += 1
        stop = self.X.shape[0] if self.calls == 1 else 100
        yield self.X[:stop], self.y[:stop]


class Exhausted(Reshuffled):
    """Re-iterable in name only: its second iteration yields nothing (a wrapped generator)."""

    def __iter__(self):
        self.calls += 1
        if self.calls == 1:
            yield self.X, self.y


def test_a_source_that_does_not_replay_is_refused(problem):
    X, y, l = problem
    with pytest.raises(DataError, match=r"second pass's rows differ from the first pass's \(per-fold feature sums disagree\).*no shuffling"):
        out_of_fold_scores(Reshuffled(X, y), l)
    with pytest.raises(DataError, match=r"second pass saw 100 rows \(per fold \(20, 20, 20, 20, 20\)\) but the "
                                        r"first saw 157"):
        out_of_fold_scores(Truncated(X, y), l)
    with pytest.raises(DataError, match=r"second pass saw 0 rows .* but the first saw 157"):
        out_of_fold_scores(Exhausted(X, y), l)


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("kwargs, err, msg", [
    ({"folds": 1}, OptionError, r"folds must be an int >= 2; got 1"),
    ({"folds": True}, OptionTypeError, r"folds must be an int >= 2; got True"),
    ({"folds": 2.0}, OptionTypeError, r"folds must be an int >= 2; got 2.0"),
    ({"start": -1}, OptionError, r"start must be an int >= 0; got -1"),
])
def test_bad_accumulator_options(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        OutOfFoldAccumulator(3, **kwargs)


def test_bad_n_classes():
    with pytest.raises(OptionError, match=r"n_classes must be an int >= 2; got 1"):
        OutOfFoldAccumulator(1)


@pytest.mark.parametrize("ridge, err, msg", [
    (0.0, OptionError, r"ridge must be a finite number > 0 .*; got 0.0"),
    (float("inf"), OptionError, r"ridge must be a finite number > 0 .*; got inf"),
    ("auto", OptionTypeError, r"ridge must be a number > 0 .*; got 'auto'"),
    (True, OptionTypeError, r"ridge must be a number > 0 .*; got True"),
])
def test_bad_ridge(problem, ridge, err, msg):
    X, y, l = problem
    acc = OutOfFoldAccumulator(l).update(X, y)
    with pytest.raises(err, match=msg):
        acc.heads(ridge=ridge)


def test_bad_batches(problem):
    X, y, l = problem
    acc = OutOfFoldAccumulator(l)
    with pytest.raises(DataError, match=r"X must be 2-D \(n samples, q features\); got shape \(157,\)"):
        acc.update(X[:, 0], y)
    with pytest.raises(DataError, match=r"Y labels must lie in \[0, 4\) for a classifier with l=4 classes; got min 1, max 4"):
        acc.update(X, np.where(y == 0, 4, y))
    with pytest.raises(DataError, match=r"Y has 3 columns .* but the classifier has l=4 classes"):
        acc.update(X, np.zeros((X.shape[0], 3)))
    acc.update(X, y)
    with pytest.raises(DataError, match=r"X has 6 features .* but the weight expects q=7"):
        acc.update(X[:, :6], y)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"X contains 1 NaN/Inf value"):
        acc.update(bad, y)


def test_bad_state_and_sums(problem):
    X, y, l = problem
    with pytest.raises(DataError, match=r"the accumulator has seen no data: call update\(X, Y\) first"):
        OutOfFoldAccumulator(l).heads()
    acc = OutOfFoldAccumulator(l, folds=3).update(X, y)
    with pytest.raises(DataError, match=r"partial sums must have shape \(\d+,\); got \(5,\)"):
        acc.load_partial_sums(np.zeros(5))
    bad = np.array(acc.partial_sums)
    bad[0] = np.inf
    with pytest.raises(NonFiniteError, match=r"partial sums contain NaN/Inf"):
        acc.load_partial_sums(bad)
    with pytest.raises(DataTypeError, match=r"can only merge an OutOfFoldAccumulator; got dict"):
        acc.merge({})
    other = OutOfFoldAccumulator(l, folds=4).update(X, y)
    with pytest.raises(OptionError, match=r"cannot merge accumulators with different \(n_classes, folds, q\): "
                                          r"\(4, 3, 7\) vs \(4, 4, 7\)"):
        acc.merge(other)
    with pytest.raises(DataError, match=r"a fold head has no rows to fit: every fold needs rows outside it "
                                        r"\(rows per fold \(1, 0\)\)"):
        OutOfFoldAccumulator(l, folds=2).update(X[:1], y[:1]).heads()


def test_mixed_array_libraries_are_refused(problem):
    torch = pytest.importorskip("torch")
    X, y, l = problem
    acc = OutOfFoldAccumulator(l).update(X, y)
    with pytest.raises(DataTypeError, match=r"batches must all come from one array library"):
        acc.update(torch.from_numpy(X), torch.from_numpy(y))
