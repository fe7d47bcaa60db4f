"""scikit-learn face: LIPClassifier is a well-behaved estimator that applies the core's LIP."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from lip_agnostic import LIPResult, refine_batches  # noqa: E402
from lip_agnostic.adapters.sklearn import LIPClassifier  # noqa: E402
from lip_agnostic.errors import DataError, OptionError, OptionTypeError, RankOutOfRangeError  # noqa: E402


# scikit-learn's own checks. None is expected to fail. Two are skipped by scikit-learn itself when
# the environment lacks what they need (reported as skipped, not by us): check_array_api_input
# (runs only with SCIPY_ARRAY_API=1) and check_classifier_data_not_an_array's pandas half
# (runs only when pandas is installed).
@parametrize_with_checks(
    [
        LIPClassifier(),
        LIPClassifier(LogisticRegression()),
        LIPClassifier(make_pipeline(StandardScaler(), LinearSVC()), random_state=0),
        LIPClassifier(RidgeClassifier(), rank=1),
    ],
    expected_failed_checks=lambda est: {},
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(n=400, q=12, l=4, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, q))
    idx = np.argmax(X[:, :l] + 0.7 * rng.normal(size=(n, l)), axis=1)
    if labels is None:
        return X, idx
    return X, np.asarray(labels, dtype=object)[idx]


def _core(W, X, y_idx, rank, b=None, fit_bias=True, **kw):
    return refine_batches(W, [(X, y_idx)], rank=rank, bias=b, bias_mode="fit" if fit_bias else "ignore", **kw)


def test_refined_weight_is_the_cores_lip_on_the_training_data():
    X, y = _data(labels=["cat", "dog", "eel", "fox"])
    clf = LIPClassifier(RidgeClassifier(), rank=2).fit(X, y)
    ref = RidgeClassifier().fit(X, y)
    y_idx = np.searchsorted(ref.classes_, y)
    want = _core(ref.coef_.T.copy(), X, y_idx, 2, b=ref.intercept_.copy())
    np.testing.assert_allclose(clf.coef_, want.weight.T, rtol=1e-10, atol=1e-12)
    assert not np.allclose(clf.coef_, ref.coef_)  # LIP changed the weight
    np.testing.assert_array_equal(clf.intercept_, ref.intercept_)  # never the intercept
    np.testing.assert_allclose(clf.decision_function(X), X @ want.weight + ref.intercept_, rtol=1e-10)
    assert clf.classes_.tolist() == ["cat", "dog", "eel", "fox"]
    assert set(clf.predict(X[:50])) <= {"cat", "dog", "eel", "fox"}
    assert isinstance(clf.lip_result_, LIPResult) and clf.lip_result_.selection.k == 2
    assert clf.lip_result_.context["n_train"] == 400 and clf.lip_result_.context["validation"] is None


def test_pipeline_features_are_the_transform_before_the_linear_step():
    X, y = _data(seed=1)
    X = X * np.arange(1, 13) + 5.0  # scaling matters
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    clf = LIPClassifier(pipe, rank=1, bias_mode="ignore").fit(X, y)
    ref = clone(pipe).fit(X, y)
    F = ref[:-1].transform(X)
    lr = ref[-1]
    want = _core(lr.coef_.T.copy(), F, y, 1, b=lr.intercept_.copy(), fit_bias=False)
    np.testing.assert_allclose(clf.coef_, want.weight.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(clf.predict_proba(X[:5]).sum(axis=1), 1.0)
    assert clf.score(X, y) > 0.5


def test_binary_one_row_coef_refits_against_plus_minus_one_targets():
    X, y_idx = _data(l=2, seed=2)
    y = np.where(y_idx == 1, True, False)
    clf = LIPClassifier(RidgeClassifier(), rank=0).fit(X, y)
    ref = RidgeClassifier().fit(X, y)
    assert ref.coef_.size == 12 and clf.coef_.shape == ref.coef_.shape
    T = np.where(y, 1.0, -1.0)[:, None]
    want = _core(ref.coef_.reshape(1, 12).T.copy(), X, T, 0, b=np.atleast_1d(ref.intercept_).astype(float))
    np.testing.assert_allclose(clf.coef_.reshape(1, 12), want.weight.T, rtol=1e-10, atol=1e-12)
    assert not np.allclose(clf.coef_, ref.coef_)
    assert clf.lip_result_.context["binary"] is True
    assert clf.classes_.tolist() == [False, True]
    assert clf.predict(X).dtype == bool


def test_predict_proba_only_where_the_estimator_has_it():
    X, y = _data(seed=3)
    assert hasattr(LIPClassifier(LogisticRegression()), "predict_proba")
    svc = LIPClassifier(LinearSVC(), rank=1).fit(X, y)
    assert not hasattr(svc, "predict_proba")
    with pytest.raises(AttributeError):
        svc.predict_proba(X)
    lr = LIPClassifier(LogisticRegression(), rank=1).fit(X, y)
    np.testing.assert_allclose(np.exp(lr.predict_log_proba(X[:4])), lr.predict_proba(X[:4]))


def test_params_clone_and_pickle():
    clf = LIPClassifier(LogisticRegression(C=0.5), rank=2, holdout=0.3, random_state=4, lip_options={"degenerate": "keep"})
    params = clf.get_params()
    assert params["rank"] == 2 and params["estimator__C"] == 0.5 and params["lip_options"] == {"degenerate": "keep"}
    clf.set_params(estimator__C=2.0, rank="auto")
    assert clf.estimator.C == 2.0 and clf.rank == "auto"
    twin = clone(clf)
    assert twin.get_params()["estimator__C"] == 2.0 and twin is not clf and twin.estimator is not clf.estimator
    X, y = _data(seed=5)
    clf.fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.coef_, clf.coef_)
    np.testing.assert_array_equal(back.predict(X), clf.predict(X))
    assert back.lip_result_.to_dict() == clf.lip_result_.to_dict()
    assert not hasattr(clf.estimator, "coef_")  # the given estimator is never fitted


def test_auto_holds_out_a_seeded_stratified_fraction():
    X, y = _data(n=500, seed=6)
    a = LIPClassifier(RidgeClassifier(), holdout=0.2, random_state=0).fit(X, y)
    b = LIPClassifier(RidgeClassifier(), holdout=0.2, random_state=0).fit(X, y)
    c = LIPClassifier(RidgeClassifier(), holdout=0.2, random_state=1).fit(X, y)
    ctx = a.lip_result_.context
    assert ctx["validation"] == "holdout" and ctx["n_train"] + ctx["n_holdout"] == 500
    assert 90 <= ctx["n_holdout"] <= 110  # about 20 %, rounded per class
    assert a.lip_result_.selection.n_val == ctx["n_holdout"]
    np.testing.assert_array_equal(a.coef_, b.coef_)  # same seed, same split
    assert a.lip_result_.selection.base_score != c.lip_result_.selection.base_score  # another seed, another split


def test_explicit_validation_trains_on_everything():
    X, y = _data(n=400, seed=7)
    Xv, yv = _data(n=150, seed=8)
    clf = LIPClassifier(SGDClassifier(random_state=0)).fit(X, y, validation=(Xv, yv))
    ctx = clf.lip_result_.context
    assert ctx["validation"] == "given" and ctx["n_train"] == 400 and ctx["n_holdout"] == 0
    assert clf.lip_result_.selection.n_val == 150
    assert clf.lip_result_.selection.extra["source"] == "validation"


def test_a_failed_fit_leaves_the_previous_fit_bit_identical():
    X, y = _data(seed=9)
    clf = LIPClassifier(RidgeClassifier(), rank=2).fit(X, y)
    coef, result, est = clf.coef_.copy(), clf.lip_result_, clf.estimator_
    clf.set_params(lip_options={"degenerate": "bogus"})
    with pytest.raises(ValueError, match="degenerate"):
        clf.fit(X[::-1], y[::-1])
    assert clf.estimator_ is est and clf.lip_result_ is result
    assert clf.coef_.tobytes() == coef.tobytes()
    Xbad = X.copy()
    Xbad[3, 0] = np.inf
    clf.set_params(lip_options=None, estimator=make_pipeline(StandardScaler(), RidgeClassifier()))
    with pytest.raises(ValueError):
        clf.fit(Xbad, y)
    assert clf.coef_.tobytes() == coef.tobytes()


@pytest.mark.parametrize(
    "make, call, error, message",
    [
        (lambda: LIPClassifier(rank="most"), "fit", OptionError, "rank"),
        (lambda: LIPClassifier(rank=True), "fit", OptionTypeError, "rank"),
        (lambda: LIPClassifier(bias_mode="none"), "fit", OptionError, "bias_mode"),
        (lambda: LIPClassifier(holdout=0.7), "fit", OptionError, r"holdout must lie in \(0, 0.5\]"),
        (lambda: LIPClassifier(lip_options={"foo": 1}), "fit", OptionTypeError, "unknown LIP option 'foo'"),
        (lambda: LIPClassifier(lip_options={"rank": 1}), "fit", OptionTypeError, "'rank' is set by the LIPClassifier"),
        (lambda: LIPClassifier(lip_options=[1]), "fit", OptionTypeError, "lip_options must be a dict"),
        (lambda: LIPClassifier(min_gain=float("nan")), "fit", OptionError, "min_gain must be a finite number"),
        (lambda: LIPClassifier(rank=50), "fit", RankOutOfRangeError, "50"),
        (lambda: LIPClassifier(KNeighborsClassifier(), rank=1), "fit", OptionTypeError,
         "KNeighborsClassifier is not one \\(nothing was trained\\)"),
        (lambda: LIPClassifier(object()), "fit", OptionTypeError, "estimator must be a scikit-learn classifier"),
        (lambda: LIPClassifier(rank=1), "validation", OptionError, "only used to choose rank='auto'"),
        (lambda: LIPClassifier(), "bad_validation", OptionTypeError, r"validation must be a tuple \(X_val, y_val\)"),
        (lambda: LIPClassifier(), "unknown_val_label", DataError, "labels the fitted classifier does not know"),
        (lambda: LIPClassifier(), "multilabel", DataError, "one label per sample"),
        (lambda: LIPClassifier(holdout=0.01), "tiny", DataError, "that is no sample"),
    ],
)
def test_bad_inputs_raise_one_line_typed_errors(make, call, error, message):
    X, y = _data(n=120, seed=10)
    clf = make()
    with pytest.raises(error, match=message) as info:
        if call == "fit":
            clf.fit(X, y)
        elif call == "validation":
            clf.fit(X, y, validation=(X, y))
        elif call == "bad_validation":
            clf.fit(X, y, validation=X)
        elif call == "unknown_val_label":
            clf.fit(X, y, validation=(X[:10], np.full(10, 99)))
        elif call == "multilabel":
            clf.fit(X, np.stack([y % 2, y // 2], axis=1))
        elif call == "tiny":
            clf.fit(X[:8], np.arange(8) % 2)
    assert "\n" not in str(info.value)


def test_full_tail_beyond_the_paper_refits_the_intercept_too():
    X, y = _data(seed=11)
    Xv, yv = _data(n=150, seed=12)
    clf = LIPClassifier(RidgeClassifier(), rank=2, lip_options={"tail": "full", "ridge": 1e-3}).fit(X, y)
    ref = RidgeClassifier().fit(X, y)
    y_idx = np.searchsorted(ref.classes_, y)
    want = _core(ref.coef_.T.copy(), X, y_idx, 2, b=ref.intercept_.copy(), tail="full", ridge=1e-3)
    assert clf.lip_result_.tail == "full" and want.bias is not None
    np.testing.assert_allclose(clf.coef_, want.weight.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(clf.intercept_, want.bias, rtol=1e-8, atol=1e-10)
    # ridge="auto" chooses on held-out data, so validation is accepted with a fixed rank
    auto = LIPClassifier(RidgeClassifier(), rank=2, lip_options={"tail": "full"}).fit(X, y, validation=(Xv, yv))
    assert auto.lip_result_.context["validation"] == "given"


def test_unchanged_means_the_estimator_fitted_on_every_row():
    X, y = _data(n=400, seed=11)
    plain = RidgeClassifier().fit(X, y)
    clf = LIPClassifier(RidgeClassifier(), rank="auto", random_state=0, lip_options={"tail": "diagonal"},
                        confidence=1e-9).fit(X, y)  # a guard nothing passes: nothing changes
    assert not clf.lip_result_.changed and clf.lip_result_.context["refit_on_all_rows"]
    np.testing.assert_array_equal(clf.estimator_.coef_, plain.coef_)
    np.testing.assert_array_equal(clf.predict(X), plain.predict(X))


def test_a_non_linear_estimator_is_refused_before_it_is_trained():
    from sklearn.ensemble import RandomForestClassifier

    class Counted(RandomForestClassifier):
        fits = 0

        def fit(self, X, y, sample_weight=None):
            type(self).fits += 1
            return super().fit(X, y, sample_weight)

    X, y = _data(n=60, seed=12)
    with pytest.raises(OptionTypeError, match=r"Counted is not one \(nothing was trained\)"):
        LIPClassifier(Counted(n_estimators=3), rank=1).fit(X, y)
    assert Counted.fits == 0


@pytest.mark.parametrize("kw", [dict(confidence=0.9), dict(min_gain=0.01), dict(holdout=0.3)])
def test_selection_parameters_with_a_fixed_rank_are_refused(kw):
    X, y = _data(n=60, seed=13)
    with pytest.raises(OptionError, match=rf"{next(iter(kw))}=.* has no effect with rank="):
        LIPClassifier(RidgeClassifier(), rank=2, **kw).fit(X, y)


def test_unsorted_classes_are_mapped_by_position_not_by_sorting():
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.linear_model import LogisticRegression

    class Reordered(ClassifierMixin, BaseEstimator):
        """A linear classifier that stores classes_ in its own (unsorted) order, rows of coef_ to match."""

        coef_ = None

        def fit(self, X, y):
            inner = LogisticRegression(max_iter=500).fit(X, y)
            order = np.arange(len(inner.classes_))[::-1]
            self.classes_ = inner.classes_[order]
            self.coef_, self.intercept_ = inner.coef_[order], inner.intercept_[order]
            return self

        def decision_function(self, X):
            return X @ self.coef_.T + self.intercept_

        def predict(self, X):
            return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    X, y = _data(n=200, seed=14)
    clf = LIPClassifier(Reordered(), rank=2).fit(X, y)
    assert clf.lip_result_.k == 2 and list(clf.classes_) == sorted(set(y), reverse=True)


# ----------------------------------------------------------------------------- label_repair (beyond the paper)
def _noisy_clusters(n=1500, q=16, l=4, rate=0.25, seed=0):
    """String labels of separable clusters, a fraction ``rate`` moved to another class (``flip``)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(l, q)) * 2
    y = rng.integers(0, l, n)
    X = means[y] + rng.normal(size=(n, q))
    flip = rng.random(n) < rate
    names = np.array(["ant", "bee", "cat", "dog"])[:l]
    return X, names[np.where(flip, (y + rng.integers(1, l, n)) % l, y)], flip


@pytest.mark.parametrize("validation", [False, True])
def test_label_issues_index_the_training_X_and_find_the_flips(validation):
    X, y, flip = _noisy_clusters(n=1900)
    kw = {"validation": (X[1500:], y[1500:])} if validation else {}
    X, y, flip = X[:1500], y[:1500], flip[:1500]
    clf = LIPClassifier(RidgeClassifier(alpha=1e-3), label_repair="auto", random_state=0).fit(X, y, **kw)
    issues = clf.label_issues_
    assert issues is clf.lip_result_.label_issues and issues.n_flagged > 0
    rows = issues.rows()
    # "row" indexes the X given to fit (through the hold-out split): the given label is that row's
    assert [clf.classes_[r["given"]] for r in rows] == y[issues.indices].tolist()
    assert len(set(issues.indices)) == len(rows) <= clf.lip_result_.context["n_train"]
    assert flip[issues.indices].mean() > 2 * flip.mean()
    assert all(clf.classes_[r["suggested"]] != clf.classes_[r["given"]] for r in rows)
    if clf.lip_result_.changed:
        np.testing.assert_allclose(clf.coef_, np.asarray(clf.lip_result_.weight).T)
    else:  # unchanged: the estimator as the user would have fitted it, on every row
        want = clone(RidgeClassifier(alpha=1e-3)).fit(X, y)
        np.testing.assert_allclose(clf.coef_, want.coef_)


def test_label_repair_and_temperature_are_parameters_that_round_trip():
    clf = LIPClassifier(label_repair="filter", temperature=False)
    params = clone(clf).get_params()
    assert params["label_repair"] == "filter" and params["temperature"] is False
    assert clf.set_params(label_repair="relabel").label_repair == "relabel"
    X, y, _ = _noisy_clusters(n=300)
    assert LIPClassifier(rank=2).fit(X, y).label_issues_ is None


@pytest.mark.parametrize("make, error, match", [
    (lambda: LIPClassifier(label_repair="yes"), OptionError, r"label_repair"),
    (lambda: LIPClassifier(label_repair="auto", rank=2), OptionError, r"label_repair='auto' needs rank='auto'"),
    (lambda: LIPClassifier(lip_options={"label_repair": "auto"}), OptionTypeError,
     r"'label_repair' is set by the LIPClassifier \(lip_options\); pass label_repair=\.\.\. instead"),
])
def test_bad_label_repair_settings_fail_before_any_training(make, error, match):
    X, y, _ = _noisy_clusters(n=200)
    with pytest.raises(error, match=match):
        make().fit(X, y)


def test_label_repair_refuses_a_binary_coef_of_one_row():
    X, y, _ = _noisy_clusters(n=300, l=2)
    clf = LIPClassifier(LogisticRegression(), label_repair="auto", random_state=0)
    with pytest.raises(OptionError, match=r"^label_repair='auto' needs one coef_ row per class, but the fitted "
                                          r"LogisticRegression has one row for the 2 classes"):
        clf.fit(X, y)
    assert not hasattr(clf, "lip_result_")
