"""LIP for scikit-learn: a meta-estimator around any linear classifier.

:class:`LIPClassifier` fits the wrapped classifier (``RidgeClassifier``,
``LogisticRegression``, ``LinearSVC``, ``SGDClassifier``, anything with
``coef_`` / ``intercept_``, or a ``Pipeline`` ending in one), then runs LIP
on its weight with the training data and predicts with the refined weight.
This module only moves arrays between scikit-learn and the core; every
formula lives in :func:`lip_agnostic.refine_batches`.

Example
-------
>>> import numpy as np
>>> from sklearn.linear_model import RidgeClassifier
>>> from lip_agnostic.adapters.sklearn import LIPClassifier
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(300, 10)); y = np.array(["a", "b", "c"])[rng.integers(0, 3, 300)]
>>> clf = LIPClassifier(RidgeClassifier(), rank=1).fit(X, y)
>>> clf.classes_.tolist(), clf.lip_result_.selection.k, clf.predict(X[:2]).shape
(['a', 'b', 'c'], 1, (2,))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.pipeline import Pipeline
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import _num_samples, check_array, check_is_fitted, column_or_1d

from lip_agnostic import refine_batches
from lip_agnostic.errors import DataError, NonFiniteError, OptionError, OptionTypeError
from lip_agnostic.options import CONSTRAINTS, check_holdout, check_min_gain, parse_bias_mode, parse_rank

from ._face import Replayed, check_selection_use, chooses, face_options, reads_twice, with_rows

__all__ = ["LIPClassifier"]

#: Rows per dense chunk handed to the core (sparse inputs are densified one chunk at a time).
CHUNK_ROWS = 4096


def _final_step(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _features(fitted: Any, X: Any) -> Any:
    """What the linear step sees: ``X`` itself, or ``pipeline[:-1].transform(X)``."""
    if isinstance(fitted, Pipeline):
        return fitted[:-1].transform(X) if len(fitted.steps) > 1 else X
    return X


def _chunks(F: Any, T: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Dense float64 ``(features, targets)`` chunks of at most :data:`CHUNK_ROWS` rows."""
    for start in range(0, F.shape[0], CHUNK_ROWS):
        block = F[start:start + CHUNK_ROWS]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        yield np.ascontiguousarray(block, dtype=np.float64), T[start:start + CHUNK_ROWS]


def _split(y_idx: np.ndarray, fraction: float, random_state: Any) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train / held-out indices: about ``fraction`` of every class, at least one row of
    each class stays in the training part (so the wrapped estimator still sees every class)."""
    rng = check_random_state(random_state)
    train, held = [], []
    for c in np.unique(y_idx):
        rows = rng.permutation(np.flatnonzero(y_idx == c))
        n_held = min(int(round(fraction * rows.size)), rows.size - 1)
        held.append(rows[:n_held])
        train.append(rows[n_held:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def _take(X: Any, idx: np.ndarray) -> Any:
    if getattr(X, "format", None) in ("coo", "dia", "bsr", "dok", "lil"):  # sparse without row indexing
        X = X.tocsr()
    elif not hasattr(X, "__getitem__"):  # array-likes that only convert (``__array__``)
        X = np.asarray(X)
    return _safe_indexing(X, idx)


class LIPClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Fit a linear classifier, then refine its weight with LIP.

    Steps
    -----
    1. ``rank="auto"`` without ``validation``: a stratified ``holdout``
       fraction of ``(X, y)`` (seeded by ``random_state``) is set aside, like
       ``validation_fraction`` in ``SGDClassifier``; the rest is the training
       part. Otherwise every row is training data.
    2. Fit a clone of ``estimator`` on the training part (``estimator_``).
    3. Features ``F``: the training inputs, or ``estimator_[:-1].transform(X)``
       for a ``Pipeline``. Weight ``W = coef_.T`` ``(q, l)``, bias ``intercept_``.
       Targets: the class index of each label (one-hot, the paper's targets);
       for a binary ``coef_`` of one row, ``+1`` for ``classes_[1]`` and ``-1``
       for ``classes_[0]`` (the sign the decision function is read by).
    4. :func:`lip_agnostic.refine_batches` keeps the top ``rank`` principal
       components of ``W`` and refits the tail's singular values by least
       squares on ``(F, targets)``; ``rank="auto"`` scores every rank on the
       held-out part (or ``validation``) and changes nothing unless the
       improvement passes the significance guard.
    5. ``W*.T`` is written into ``estimator_``'s final step (same dtype), so
       ``predict``, ``decision_function`` and ``predict_proba`` of the wrapped
       estimator use it. Any failure leaves this object as it was.

    Parameters
    ----------
    estimator : classifier, default=RidgeClassifier()
        A linear classifier with ``coef_`` ``(n_classes, q)`` (or ``(1, q)``
        for two classes) and ``intercept_`` after fitting, or a ``Pipeline``
        ending in one. Never modified (a clone is fitted).
    rank : int, float in (0, 1], or "auto", default="auto"
        Principal components kept (a float is an energy fraction).
    bias_mode : {"fit", "ignore"}, default="fit"
        ``"fit"``: the refit targets ``T - 1 b^T`` with the fitted intercept
        ``b``; ``"ignore"``: the paper's fit (targets ``T``). The intercept is
        not changed on the paper's path (``tail="full"`` in ``lip_options``,
        beyond the paper, refits it with the weight).
    holdout : float in (0, 0.5], default=0.2
        Fraction of ``(X, y)`` held out to choose ``rank="auto"`` when ``fit``
        gets no ``validation`` (scikit-learn's ``validation_fraction``).
    random_state : int, RandomState or None, default=None
        Seeds that split.
    min_gain : float, default=0.0
        ``rank="auto"`` changes the weight only if the held-out score improves by more.
    confidence : float or None, default=0.95
        Level of the one-sided sign test guarding ``rank="auto"`` (``None``: off).
    target_scale : float or "logits", default=1.0
        Scale of the refit targets (``1.0``: the paper).
    label_repair : {"none", "filter", "relabel", "neighbours", "auto"}, default="none"
        Beyond the paper, with ``rank="auto"``: also try ridge heads fit
        without (``"filter"``), or with the suggested label of (``"relabel"``),
        or with the nearest neighbours' label of (``"neighbours"``), the
        training rows whose label looks wrong (out-of-fold confident learning
        on the features, no retraining; ``"auto"``: all three); the held-out
        guard picks among them and the usual candidates. Opt-in: against
        ``CleanLearning`` on the same estimator it gains less (docs/EVIDENCE.md). The suspect rows are in
        :attr:`label_issues_`. Needs one ``coef_`` row per class (not a
        binary ``coef_`` of one row).
    temperature : bool, default=True
        Beyond the paper: after a change beyond the paper, fit one logit
        temperature on the held-out part (reported in
        ``lip_result_.calibration``; written into the weight when no
        component is kept and the intercept is refit).
    lip_options : dict, optional
        Further keywords of :func:`lip_agnostic.refine_batches` (e.g.
        ``degenerate``, ``rtol``; ``tail="full"`` and ``ridge``, beyond the paper).

    Attributes
    ----------
    estimator_ : estimator
        The fitted clone, its final step carrying the refined weight.
    classes_ : ndarray
        Class labels (any type the wrapped estimator accepts).
    lip_result_ : lip_agnostic.LIPResult
        The core's report (``to_dict()`` for JSON); ``context`` adds the
        sklearn facts (``n_train``, ``n_holdout``, ``validation``, ``binary``).
    label_issues_ : LabelIssues or None
        With ``label_repair`` (or ``lip_options={"label_issues": True}``): the
        training rows whose given label looks wrong; ``label_issues_.rows()``
        lists them most suspect first (``row``: the row's index in the ``X``
        passed to :meth:`fit`, ``position``: in the training part, ``given``,
        ``suggested``: indices into ``classes_``, ``score``: lower is more
        suspect), ``label_issues_.indices`` the rows alone, so
        ``X[clf.label_issues_.indices]`` are the suspects (only rows of the
        training part: the hold-out is not checked). None otherwise. Review
        them, fix the training labels and refit; never relabel a test set.
    n_features_in_ : int
    feature_names_in_ : ndarray, when ``X`` had column names

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from lip_agnostic.adapters.sklearn import LIPClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 6)); y = (X[:, 0] > 0).astype(int)
    >>> clf = LIPClassifier(LogisticRegression(), rank="auto", random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape, clf.lip_result_.context["binary"]
    ((3, 2), True)
    """

    def __init__(
        self,
        estimator: Any = None,
        *,
        rank: int | float | str = "auto",
        bias_mode: str = "fit",
        holdout: float = 0.2,
        random_state: Any = None,
        min_gain: float = 0.0,
        confidence: float | None = 0.95,
        target_scale: float | str = 1.0,
        label_repair: str = "none",
        temperature: bool = True,
        lip_options: dict | None = None,
    ) -> None:
        self.estimator = estimator
        self.rank = rank
        self.bias_mode = bias_mode
        self.holdout = holdout
        self.random_state = random_state
        self.min_gain = min_gain
        self.confidence = confidence
        self.target_scale = target_scale
        self.label_repair = label_repair
        self.temperature = temperature
        self.lip_options = lip_options

    # ------------------------------------------------------------------ fitting
    def _base(self) -> Any:
        if self.estimator is None:
            from sklearn.linear_model import RidgeClassifier

            return RidgeClassifier()
        if not hasattr(self.estimator, "fit"):
            raise OptionTypeError(f"estimator must be a scikit-learn classifier; got {type(self.estimator).__name__}")
        final = _final_step(self.estimator)
        # refused before any training: LIP rewrites a linear layer's coef_, which e.g. a forest does not have
        if not (isinstance(final, LinearClassifierMixin) or hasattr(type(final), "coef_")):
            raise OptionTypeError(
                f"LIP needs a linear classifier with coef_ and intercept_ (or a Pipeline ending in one); "
                f"{type(final).__name__} is not one (nothing was trained)")
        return self.estimator

    def fit(self, X: Any, y: Any, *, validation: tuple[Any, Any] | None = None) -> "LIPClassifier":
        """Fit the wrapped classifier on ``(X, y)``, then refine its weight with LIP.

        Parameters
        ----------
        X : array-like or sparse matrix, shape (n, p)
            Whatever the wrapped estimator (or pipeline) accepts.
        y : array-like, shape (n,)
            Class labels of any type.
        validation : tuple (X_val, y_val), optional
            Held-out data to choose ``rank="auto"`` (noisy labels are fine);
            the whole of ``(X, y)`` is then used for training.
        """
        base = self._base()
        rank, bias_mode, options = self._options()
        auto = chooses(rank, options)
        # the constructor's selection values (defaults or not: the core's rule looks at the values)
        given = {"min_gain": self.min_gain, "confidence": self.confidence, "holdout": self.holdout}
        check_selection_use(rank, {**options, **given}, validation=validation is not None)
        if validation is not None:
            if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
                raise OptionTypeError(f"validation must be a tuple (X_val, y_val); got {type(validation).__name__}")
        holdout = self.holdout
        if auto and validation is None:
            holdout = check_holdout(holdout)
        if y is None:
            raise DataError("LIPClassifier requires y to be passed, but the target y is None")
        y_arr = np.asarray(y) if not hasattr(y, "to_numpy") else y.to_numpy()
        if y_arr.ndim == 2 and y_arr.shape[1] == 1:
            y_arr = column_or_1d(y_arr, warn=True)  # scikit-learn's DataConversionWarning
        check_classification_targets(y_arr)
        if type_of_target(y_arr) not in ("binary", "multiclass"):
            raise DataError(f"LIPClassifier needs one label per sample (binary or multiclass y); "
                             f"got {type_of_target(y_arr)!r} targets of shape {y_arr.shape}")
        n = y_arr.shape[0]
        if _num_samples(X) != n:
            raise DataError(f"X and y have different numbers of samples: {_num_samples(X)} and {n}")

        if auto and validation is None:
            _, y_codes = np.unique(y_arr, return_inverse=True)
            train_idx, held_idx = _split(y_codes, float(holdout), self.random_state)
            if held_idx.size == 0:
                raise DataError(
                    f"rank='auto' holds out a fraction holdout={holdout} of the data, but with {n} samples "
                    "that is no sample; pass validation=(X_val, y_val), more data or a fixed rank")
            X_fit, y_fit = _take(X, train_idx), y_arr[train_idx]
            X_val, y_val = _take(X, held_idx), y_arr[held_idx]
        else:
            train_idx = None  # the fit rows are X's rows
            X_fit, y_fit = X, y_arr
            X_val, y_val = validation if validation is not None else (None, None)

        fitted = clone(base).fit(X_fit, y_fit)
        final = _final_step(fitted)
        classes = np.asarray(getattr(fitted, "classes_", getattr(final, "classes_", None)))
        coef, intercept = self._weights(final, classes)

        F = self._check_features(_features(fitted, X_fit), coef.shape[1], "training")
        targets = self._targets(y_fit, classes, coef.shape[0], "y")
        W = np.asarray(coef, dtype=np.float64).T.copy()
        b = None if intercept is None else np.asarray(intercept, dtype=np.float64).copy()
        val_batches = None
        if X_val is not None:
            F_val = self._check_features(_features(fitted, X_val), coef.shape[1], "validation")
            y_val_arr = np.asarray(y_val) if not hasattr(y_val, "to_numpy") else y_val.to_numpy()
            T_val = self._targets(y_val_arr.ravel() if y_val_arr.ndim == 2 and y_val_arr.shape[1] == 1
                                  else y_val_arr, classes, coef.shape[0], "y_val")
            if F_val.shape[0] != T_val.shape[0]:
                raise DataError(f"X_val and y_val have different numbers of samples: "
                                 f"{F_val.shape[0]} and {T_val.shape[0]}")
            val_batches = list(_chunks(F_val, T_val))
        reason = reads_twice(options)
        if reason is not None and targets.ndim != 1:
            raise OptionError(f"{reason} needs one coef_ row per class, but the fitted {type(final).__name__} has "
                              f"one row for the 2 classes {classes.tolist()} (a binary coef_); drop {reason}")
        # label_repair / label_issues=True read the fit rows again: each read a fresh pass (no dense copy kept)
        chunks = _chunks(F, targets) if reason is None else Replayed(lambda first: _chunks(F, targets))
        result = refine_batches(W, chunks, rank=rank, validation=val_batches, bias=b,
                                bias_mode=bias_mode, **options)
        result = with_rows(result, train_idx, n_stream=int(targets.shape[0]))  # label issues name rows of X
        new = np.asarray(result.weight).T
        if new.shape != coef.shape or not np.isfinite(new).all():
            raise DataError(f"LIP returned an unusable weight (shape {new.shape}, expected {coef.shape}); "
                             "nothing was changed")
        new_b = None if getattr(result, "bias", None) is None else np.asarray(result.bias, dtype=np.float64)
        if new_b is not None and (new_b.shape != (coef.shape[0],) or not np.isfinite(new_b).all()):
            raise DataError(f"LIP returned an unusable bias (shape {new_b.shape}); nothing was changed")
        context = {
            "face": "sklearn",
            "estimator": type(final).__name__,
            "binary": coef.shape[0] == 1,
            "n_train": int(targets.shape[0]),
            "n_holdout": 0 if X_val is None or validation is not None else int(len(y_val)),
            "validation": "given" if validation is not None else ("holdout" if auto else None),
            "bias_in_fit": b is not None and bias_mode == "fit",
        }
        refit_all = auto and validation is None and not result.changed
        if refit_all:
            # Nothing changed: the answer is the estimator as the user would have fitted it, on every row
            # (not the one fitted on the rows left after the hold-out).
            fitted = clone(base).fit(X, y_arr)
            final = _final_step(fitted)
            classes = np.asarray(getattr(fitted, "classes_", getattr(final, "classes_", None)))
            new, new_b = None, None
        context["refit_on_all_rows"] = refit_all
        result = dataclasses.replace(result, context={**result.context, **context})
        # Everything above may fail; only now is this object changed.
        if new is not None:
            old = np.asarray(final.coef_.toarray() if hasattr(final.coef_, "toarray") else final.coef_)
            final.coef_ = new.reshape(old.shape).astype(old.dtype, copy=True)
        if new_b is not None:  # tail="full" (beyond the paper) refits the intercept too
            old_b = np.asarray(final.intercept_)
            final.intercept_ = new_b.reshape(old_b.shape).astype(old_b.dtype, copy=True)
        self.estimator_ = fitted
        self.classes_ = classes
        self.lip_result_ = result
        self.label_issues_ = result.label_issues
        return self

    def _options(self) -> tuple[Any, str, dict]:
        """Checked ``(rank, bias_mode, refine_batches keywords)`` from the constructor parameters."""
        rank = parse_rank(self.rank)
        bias_mode = parse_bias_mode(self.bias_mode)
        extra = {} if self.lip_options is None else self.lip_options
        if not isinstance(extra, dict):
            raise OptionTypeError(f"lip_options must be a dict of refine_batches keywords; got {type(extra).__name__}")
        reserved = dict(rank="rank", validation="fit(..., validation=)", holdout="holdout",
                        bias_mode="bias_mode", all_reduce=None, min_gain="min_gain",
                        confidence="confidence", target_scale="target_scale", label_repair="label_repair",
                        temperature="temperature")
        extra = face_options(face="LIPClassifier (lip_options)", reserved=reserved, **extra)
        check_min_gain(self.min_gain)
        options = dict(extra, min_gain=float(self.min_gain), confidence=self.confidence,
                       target_scale=self.target_scale, label_repair=CONSTRAINTS["label_repair"](self.label_repair),
                       temperature=CONSTRAINTS["temperature"](self.temperature))
        return rank, bias_mode, options

    @staticmethod
    def _weights(final: Any, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        coef = getattr(final, "coef_", None)
        if coef is None:
            raise OptionTypeError(
                f"LIP needs a linear classifier with coef_ and intercept_ (or a Pipeline ending in one); "
                f"the fitted {type(final).__name__} has no coef_")
        if hasattr(coef, "toarray"):
            coef = coef.toarray()
        coef = np.asarray(coef)
        if coef.ndim == 1:
            coef = coef[None, :]
        if classes.ndim != 1:
            raise OptionTypeError(f"the fitted {type(final).__name__} has no classes_; LIP needs a classifier")
        if classes.shape[0] < 2:
            raise DataError(f"the fitted {type(final).__name__} knows {classes.shape[0]} class "
                            f"{classes.tolist()}; LIP needs training labels of at least 2 classes")
        l = classes.shape[0]
        if coef.ndim != 2 or not (coef.shape[0] == l or (l == 2 and coef.shape[0] == 1)):
            raise DataError(f"coef_ of shape {coef.shape} does not match {l} classes; expected "
                             f"({l}, n_features){' or (1, n_features)' if l == 2 else ''}")
        if not np.isfinite(coef).all():
            raise NonFiniteError(f"the fitted coef_ holds NaN/Inf ({int((~np.isfinite(coef)).sum())} values); "
                             "LIP cannot refine a diverged classifier")
        intercept = getattr(final, "intercept_", None)
        if intercept is None or np.ndim(intercept) == 0 or getattr(final, "fit_intercept", True) is False:
            if intercept is not None and np.ndim(intercept) == 0 and float(intercept) != 0.0:
                return coef, np.full(coef.shape[0], float(intercept))
            return coef, None
        intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
        if intercept.shape[0] != coef.shape[0]:
            raise DataError(f"intercept_ of shape {intercept.shape} does not match coef_ of shape {coef.shape}")
        return coef, intercept

    @staticmethod
    def _check_features(F: Any, q: int, what: str) -> Any:
        if not hasattr(F, "toarray"):
            F = check_array(F, dtype=np.float64, ensure_all_finite=True,
                            input_name=f"the linear step's {what} features")
        else:
            F = F.tocsr()
            if not np.isfinite(F.data).all():
                raise NonFiniteError(f"the linear step's {what} features contain NaN or infinity")
        if F.shape[1] != q:
            raise DataError(f"the linear step gets {F.shape[1]} features but coef_ has {q} columns")
        return F

    @staticmethod
    def _targets(y: np.ndarray, classes: np.ndarray, rows: int, name: str) -> np.ndarray:
        """Class indices into ``classes`` (or ``(n, 1)`` +-1 targets for a one-row binary ``coef_``)."""
        y = np.asarray(y)
        if y.ndim != 1:
            raise DataError(f"{name} must be 1-D (one label per sample); got shape {y.shape}")
        # the position of each label in classes_ as the estimator stores it (sorted or not: no searchsorted)
        where = {c: i for i, c in enumerate(classes.tolist())}
        idx = np.fromiter((where.get(v, -1) for v in y.tolist()), dtype=np.int64, count=y.shape[0])
        unknown = idx < 0
        if np.any(unknown):
            bad = np.unique(y[unknown])[:5].tolist()
            raise DataError(f"{name} holds labels the fitted classifier does not know: {bad}; "
                             f"classes_ = {classes.tolist()}")
        if rows == 1:
            return (2.0 * (idx == 1) - 1.0)[:, None]
        return idx.astype(np.int64)

    # ------------------------------------------------------------------ prediction (the refined weight)
    def decision_function(self, X: Any) -> np.ndarray:
        """The wrapped estimator's decision function with the refined weight."""
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    def predict(self, X: Any) -> np.ndarray:
        """Class labels from the refined weight."""
        check_is_fitted(self)
        return self.estimator_.predict(X)

    def _has_proba(self) -> bool:
        est = self.estimator_ if hasattr(self, "estimator_") else self._base()
        return hasattr(est, "predict_proba")

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """The wrapped estimator's probabilities with the refined weight (where it has them)."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        check_is_fitted(self)
        est = self.estimator_
        if hasattr(est, "predict_log_proba"):
            return est.predict_log_proba(X)
        return np.log(est.predict_proba(X))

    @property
    def coef_(self) -> np.ndarray:
        """The refined weight, ``(n_classes, q)`` (or ``(1, q)`` for a binary problem)."""
        check_is_fitted(self)
        return _final_step(self.estimator_).coef_

    @property
    def intercept_(self) -> Any:
        """The wrapped estimator's intercept (changed only by ``tail="full"``, beyond the paper)."""
        check_is_fitted(self)
        return _final_step(self.estimator_).intercept_

    @property
    def n_features_in_(self) -> int:
        check_is_fitted(self)
        return self.estimator_.n_features_in_

    @property
    def feature_names_in_(self) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.feature_names_in_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "lip_result_")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        inner = self._base().__sklearn_tags__()
        tags.input_tags.sparse = inner.input_tags.sparse
        tags.input_tags.allow_nan = inner.input_tags.allow_nan
        tags.input_tags.string = inner.input_tags.string
        tags.input_tags.categorical = inner.input_tags.categorical
        tags.input_tags.pairwise = inner.input_tags.pairwise
        tags.target_tags.multi_output = False
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags
