"""Out-of-fold scores without retraining: K ridge heads from one pass of fold statistics (beyond the paper).

Finding the rows whose label is wrong needs, for every training row, a score from a model
that did not see that row (confident learning, Northcutt et al. 2021, uses out-of-sample
probabilities). Retraining a network K times is what users cannot afford. Here the
network's penultimate features stay as they are and only a linear head is refit, K times,
in closed form, from statistics gathered in one pass.

How it works
------------
1. Rows fall into ``K`` folds by their position in the stream: the row at position ``i``
   (counting from ``start``) is in fold ``i mod K``. The fold of a row depends on nothing
   else, so a second pass that replays the same rows in the same order finds it again.
2. One pass accumulates, per fold ``f``, ``X_f^T X_f``, ``X_f^T T_f``, ``1^T X_f``,
   ``1^T T_f`` and ``n_f`` (``T`` the one-hot labels or a target matrix), in float64 where
   the device has it. Batches, workers and accumulators add these sums
   (:meth:`OutOfFoldAccumulator.merge`, or an all-reduce of
   :attr:`~OutOfFoldAccumulator.partial_sums`).
3. The head that did not see fold ``f`` is fit on "total minus fold" statistics
   (``S_-f = S - S_f``): the same estimator as the full-tail refit at ``k = 0``
   (:mod:`lip_agnostic.full_tail`), a ridge regression with the bias refit on centred data,
   ``min ||X W + 1 b^T - T||^2 + lam ||W||^2``:

   * ``Gc = X^T X - sx sx^T / n``, ``Rc = X^T T - sx st^T / n`` (all ``_-f``);
   * ``lam = ridge * trace(Gc) / q`` (scale-free, as ``ridge="auto"``'s grid);
   * ``W_-f = (Gc + lam I)^-1 Rc``, ``b_-f = (st - sx^T W_-f) / n``.

   The head on all rows (``S`` itself) is fit the same way, for held-out rows.
4. A second pass gives the row at position ``i`` the logits ``x_i W_-f + b_-f`` with
   ``f = i mod K``; the same pass re-adds ``1^T X`` per fold and compares it with step 2's,
   so a source that does not replay the same rows in the same order is refused.

Memory and passes
-----------------
The statistics take ``O(K (q^2 + q l))`` (float64 where available); the heads the same.
Per-row scores are ``O(n l)``: :meth:`FoldHeads.stream` yields them batch by batch, so a
caller with a large ``n`` keeps only what its flags need per row (the given label's score,
the argmax, a margin) or writes each chunk out (e.g. to a ``numpy.memmap``) instead of
holding them; :func:`out_of_fold_scores` keeps them all. Confident learning's
``prune_by_noise_rate`` ranks margins within each given class, so it needs the ``(n, l)``
probabilities (from memory or from such a file).

The second pass needs a re-iterable source: a list of batches, a DataLoader (with a
deterministic order: no shuffling, or a seeded sampler that replays), a dataset read from
a file. A one-shot generator or iterator (``iter(src) is src``) is refused with a
:class:`~lip_agnostic.errors.DataTypeError` before anything is read; a source whose second
pass yields other rows is refused with a :class:`~lip_agnostic.errors.DataError`.

Examples
--------
>>> import numpy as np
>>> from lip_agnostic.out_of_fold import out_of_fold_scores
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 6)); y = (X[:, 0] > 0).astype(int)
>>> oof = out_of_fold_scores([(X[:120], y[:120]), (X[120:], y[120:])], 2, folds=4)
>>> oof.logits.shape, float(np.mean(oof.logits.argmax(1) == y)) > 0.9
((200, 2), True)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from ._arrays import (as_features, as_targets, check_product_finite, device_of, namespace, stats_dtype,
                      to_float, working_dtype)
from .errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError

__all__ = [
    "DEFAULT_FOLDS",
    "DEFAULT_OOF_RIDGE",
    "OutOfFoldAccumulator",
    "FoldHeads",
    "OutOfFold",
    "out_of_fold_scores",
    "require_reiterable",
]

#: Folds of :class:`OutOfFoldAccumulator` (cleanlab's default is 5 as well).
DEFAULT_FOLDS = 5
#: ``lam = ridge * trace(Xc^T Xc) / q`` for the fold heads (experiments/label_issues_check.py: of
#: 1e-3 ... 1 on digits and Fashion-MNIST with 40 % noise, 0.1 gave the most precise flags in most rows).
DEFAULT_OOF_RIDGE = 0.1


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionTypeError(f"{name} must be an int >= {minimum}; got {value!r}")
    if int(value) < minimum:
        raise OptionError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def _check_ridge(ridge: Any) -> float:
    if isinstance(ridge, bool) or not isinstance(ridge, numbers.Real):
        raise OptionTypeError(f"ridge must be a number > 0 (a fraction of trace(Xc^T Xc) / q); got {ridge!r}")
    r = float(ridge)
    if not (r > 0.0 and math.isfinite(r)):
        raise OptionError(f"ridge must be a finite number > 0 (a fraction of trace(Xc^T Xc) / q); got {ridge!r}")
    return r


def require_reiterable(source: Any, name: str = "batches") -> None:
    """Refuse a one-shot iterator (``iter(source) is source``): a second pass would see nothing.

    Raises
    ------
    DataTypeError
        For a generator, an iterator, or anything that is not iterable.
    """
    try:
        it = iter(source)
    except TypeError:
        raise DataTypeError(f"{name} must be a re-iterable source of (X, Y) batches (a list, a DataLoader); "
                            f"got {type(source).__name__}") from None
    if it is source:
        raise DataTypeError(
            f"{name} is a one-shot {type(source).__name__}: out-of-fold scores need two passes over the "
            "same rows; pass a list of batches, a DataLoader or a dataset that can be iterated again"
        )


def _fold_starts(position: int, n_b: int, K: int) -> list[int]:
    """First row of each fold in a batch whose first row sits at ``position`` (step 1); at most ``n_b``
    (the array API leaves slices that start past the end unspecified)."""
    return [min((f - position) % K, n_b) for f in range(K)]


class OutOfFoldAccumulator:
    """Per-fold ridge statistics from one streaming pass (module docstring, steps 1-2).

    Parameters
    ----------
    n_classes : int
        ``l``, the number of classes (integer labels need it; a target matrix must have ``l`` columns).
    folds : int
        ``K >= 2``; the row at stream position ``i`` is in fold ``i mod K``.
    start : int
        Stream position of this accumulator's first row: a worker that holds rows
        ``[a, b)`` of a larger stream passes ``start=a`` so that merging equals one pass.

    Notes
    -----
    The array library, device and ``q`` are taken from the first batch.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> X, y = rng.normal(size=(50, 4)), rng.integers(0, 3, 50)
    >>> acc = OutOfFoldAccumulator(3, folds=5).update(X, y)
    >>> acc.n_samples, acc.fold_sizes
    (50, (10, 10, 10, 10, 10))
    """

    def __init__(self, n_classes: int, /, *, folds: int = DEFAULT_FOLDS, start: int = 0) -> None:
        self.n_classes = _check_int(n_classes, "n_classes", 2)
        self.folds = _check_int(folds, "folds", 2)
        self.start = _check_int(start, "start", 0)
        self._position = self.start
        self._xp: Any = None
        self._q: int | None = None
        self._sums: Any = None  # (K, q*q + q*l + q + l + 1)

    # ------------------------------------------------------------------ layout
    def _sizes(self) -> tuple[int, ...]:
        q, l = self._q, self.n_classes
        return (q * q, q * l, q, l, 1)

    def _init(self, xp: Any, X: Any) -> None:
        self._xp = xp
        self._q = int(X.shape[1])
        self._device = device_of(X)
        self._sdt = stats_dtype(xp, self._device)
        self._sums = xp.zeros((self.folds, sum(self._sizes())), dtype=self._sdt, device=self._device)

    def _need_data(self) -> None:
        if self._sums is None:
            raise DataError("the accumulator has seen no data: call update(X, Y) first")

    @property
    def n_features(self) -> int | None:
        """``q`` (None before the first batch)."""
        return self._q

    @property
    def n_samples(self) -> int:
        """Rows the statistics hold."""
        return 0 if self._sums is None else int(round(float(self._xp.sum(self._sums[:, -1]))))

    @property
    def fold_sizes(self) -> tuple[int, ...]:
        """Rows per fold."""
        if self._sums is None:
            return (0,) * self.folds
        return tuple(int(round(float(v))) for v in self._sums[:, -1])

    # ------------------------------------------------------------------ data
    def update(self, X: Any, Y: Any, /) -> "OutOfFoldAccumulator":
        """Add a batch: features ``X (n_b, q)`` and labels ``(n_b,)`` or targets ``(n_b, l)``."""
        xp = namespace(X, Y)
        if getattr(X, "ndim", None) != 2:
            raise DataError(f"X must be 2-D (n samples, q features); got shape {tuple(getattr(X, 'shape', ()))}")
        if self._sums is None:
            self._init(xp, X)
        elif xp is not self._xp and getattr(xp, "__name__", None) != getattr(self._xp, "__name__", None):
            raise DataTypeError(f"batches must all come from one array library; got {getattr(xp, '__name__', xp)} "
                                f"after {getattr(self._xp, '__name__', self._xp)}")
        q, l, K, sdt = self._q, self.n_classes, self.folds, self._sdt
        X = as_features(xp, X, q, sdt, finite=False)
        Y, is_labels = as_targets(xp, Y, int(X.shape[0]), l, sdt, finite=False)
        if is_labels:
            classes = xp.astype(xp.arange(l, device=self._device), Y.dtype)
            Y = xp.astype(Y[:, None] == classes[None, :], sdt)
        n_b = int(X.shape[0])
        rows = []
        for f, s in enumerate(_fold_starts(self._position, n_b, K)):
            Xf, Yf = X[s::K, :], Y[s::K, :]
            Xt = xp.linalg.matrix_transpose(Xf)
            xx = Xt @ Xf
            check_product_finite(xp, xx, Xf, "X")
            xy = Xt @ Yf
            if not is_labels:
                check_product_finite(xp, xy, Yf, "Y")
            nf = xp.asarray([float(Xf.shape[0])], dtype=sdt, device=self._device)
            rows.append(xp.concat([xp.reshape(xx, (-1,)), xp.reshape(xy, (-1,)), xp.sum(Xf, axis=0),
                                   xp.sum(Yf, axis=0), nf]))
        self._sums = self._sums + xp.stack(rows)
        self._position += n_b
        return self

    @property
    def partial_sums(self) -> Any:
        """The per-fold statistics as one flat array (sum-reducible across workers)."""
        self._need_data()
        return self._xp.reshape(self._sums, (-1,))

    def load_partial_sums(self, sums: Any, /) -> "OutOfFoldAccumulator":
        """Replace the statistics, e.g. with their all-reduced total (the shape of :attr:`partial_sums`)."""
        self._need_data()
        xp = self._xp
        want = (int(self._sums.shape[0]) * int(self._sums.shape[1]),)
        if getattr(sums, "shape", None) is None or tuple(sums.shape) != want:
            raise DataError(f"partial sums must have shape {want}; got {tuple(getattr(sums, 'shape', ()))}")
        sums = xp.astype(xp.asarray(sums, device=self._device), self._sdt)
        if not bool(xp.all(xp.isfinite(sums))):
            raise NonFiniteError("partial sums contain NaN/Inf")
        self._sums = xp.reshape(sums, tuple(self._sums.shape))
        return self

    def merge(self, other: "OutOfFoldAccumulator", /) -> "OutOfFoldAccumulator":
        """Add another accumulator's statistics (same ``n_classes``, ``folds`` and ``q``)."""
        if not isinstance(other, OutOfFoldAccumulator):
            raise DataTypeError(f"can only merge an OutOfFoldAccumulator; got {type(other).__name__}")
        mine = (self.n_classes, self.folds, self._q)
        theirs = (other.n_classes, other.folds, other._q)
        if other._sums is None:
            return self
        if self._sums is None:  # a worker that saw no rows takes the other's layout
            self._xp, self._q, self._device, self._sdt = other._xp, other._q, other._device, other._sdt
            self._sums = other._xp.zeros_like(other._sums)
        elif mine != theirs:
            raise OptionError(f"cannot merge accumulators with different (n_classes, folds, q): {mine} vs {theirs}")
        return self.load_partial_sums(self._xp.reshape(self._sums + self._xp.asarray(other._sums, device=self._device),
                                                       (-1,)))

    # ------------------------------------------------------------------ heads
    def _split(self, S: Any) -> tuple[Any, Any, Any, Any, Any]:
        """``(XX, XT, sx, st, n)`` of stacked statistics ``S (..., size)``."""
        xp, q, l = self._xp, self._q, self.n_classes
        lead = tuple(S.shape[:-1])
        out, a = [], 0
        for size in self._sizes():
            out.append(S[..., a:a + size])
            a += size
        xx, xy, sx, st, n = out
        return (xp.reshape(xx, lead + (q, q)), xp.reshape(xy, lead + (q, l)), sx, st, n)

    def _solve(self, S: Any, ridge: float) -> tuple[Any, Any, tuple[float, ...]]:
        """Step 3 on stacked statistics ``S (m, size)``: heads ``(m, q, l)``, biases ``(m, l)``, ``lam``."""
        xp, q = self._xp, self._q
        XX, XT, sx, st, n = self._split(S)
        n = n[:, 0]
        if bool(xp.any(n < 1)):
            raise DataError("a fold head has no rows to fit: every fold needs rows outside it "
                            f"(rows per fold {self.fold_sizes})")
        Gc = XX - (sx[:, :, None] * sx[:, None, :]) / n[:, None, None]
        Rc = XT - (sx[:, :, None] * st[:, None, :]) / n[:, None, None]
        eye = xp.eye(q, dtype=self._sdt, device=self._device)
        tr = xp.sum(xp.sum(Gc * eye, axis=2), axis=1) / q
        lam = xp.where(tr > 0, ridge * tr, xp.full_like(tr, ridge))  # constant features: any lam > 0 gives W = 0
        Wh = xp.linalg.solve(Gc + lam[:, None, None] * eye, Rc)
        b = (st - xp.sum(sx[:, :, None] * Wh, axis=1)) / n[:, None]
        return Wh, b, tuple(float(v) for v in lam)

    def heads(self, *, ridge: float = DEFAULT_OOF_RIDGE) -> "FoldHeads":
        """The ``K`` fold heads (each fit without its fold) and the head on all rows (step 3)."""
        self._need_data()
        r = _check_ridge(ridge)
        xp = self._xp
        total = xp.sum(self._sums, axis=0)
        S = xp.concat([total[None, :] - self._sums, total[None, :]], axis=0)
        Wh, b, lam = self._solve(S, r)
        K = self.folds
        _, _, sx, _, n = self._split(self._sums)
        return FoldHeads(weights=Wh[:K, ...], biases=b[:K, ...], weight=Wh[K, ...], bias=b[K, ...],
                         ridge=r, lams=lam[:K], lam=lam[K], folds=K, start=self.start,
                         fold_sums=sx, fold_sizes=self.fold_sizes)


@dataclass(frozen=True)
class FoldHeads:
    """The fold heads of :meth:`OutOfFoldAccumulator.heads` (beyond the paper).

    Attributes
    ----------
    weights : array, shape (K, q, l)
        ``W_-f``: fold ``f``'s head, fit on every row outside fold ``f``.
    biases : array, shape (K, l)
    weight : array, shape (q, l)
        The head fit on all rows (for held-out rows, e.g. to fit a temperature).
    bias : array, shape (l,)
    ridge : float
        The relative ridge; ``lams`` / ``lam`` the absolute ``lam`` per fold head / full head.
    folds, start : int
        ``K`` and the stream position of the first row.
    fold_sums, fold_sizes
        ``1^T X_f`` and ``n_f`` from the first pass (the replay check of step 4).
    """

    weights: Any
    biases: Any
    weight: Any
    bias: Any
    ridge: float
    lams: tuple[float, ...]
    lam: float
    folds: int
    start: int
    fold_sums: Any
    fold_sizes: tuple[int, ...]

    def logits(self, X: Any, /, *, position: int) -> Any:
        """Out-of-fold logits of rows at stream positions ``position, position + 1, ...`` (step 4).

        The result has ``X``'s floating dtype (float32 for integer features) and device.
        """
        xp = namespace(X)
        q = int(self.weights.shape[1])
        X = as_features(xp, X, q, working_dtype(xp, X.dtype))
        K, n_b = self.folds, int(X.shape[0])
        Wh, b = to_float(xp, self.weights, X.dtype), to_float(xp, self.biases, X.dtype)
        parts, index = [], []
        for f, s in enumerate(_fold_starts(position, n_b, K)):
            parts.append(X[s::K, :] @ Wh[f, ...] + b[f, :])
            index.append(xp.arange(s, n_b, K, device=device_of(X)))
        Z = xp.concat(parts, axis=0)
        order = xp.argsort(xp.concat(index))
        return xp.take(Z, order, axis=0)

    def full_logits(self, X: Any, /) -> Any:
        """Logits of the head fit on all rows (for held-out rows)."""
        xp = namespace(X)
        X = as_features(xp, X, int(self.weight.shape[0]), working_dtype(xp, X.dtype))
        return X @ to_float(xp, self.weight, X.dtype) + to_float(xp, self.bias, X.dtype)

    def stream(self, batches: Iterable, /, *, features: bool = False) -> Iterator[tuple[Any, ...]]:
        """Second pass: yield ``(logits, Y)`` per ``(X, Y)`` batch, the logits out of fold
        (``(logits, Y, X)`` with ``features=True``).

        After the last batch, the rows per fold and ``1^T X`` per fold are compared with the
        first pass's; a source that replayed other rows raises :class:`DataError`.
        """
        require_reiterable(batches)
        xp = None
        position = self.start
        seen = None
        counts = [0] * self.folds
        for X, Y in batches:
            Z = self.logits(X, position=position)
            xp = namespace(X)
            K, n_b = self.folds, int(X.shape[0])
            sdt = self.fold_sums.dtype
            sums = []
            for f, s in enumerate(_fold_starts(position, n_b, K)):
                sums.append(xp.sum(to_float(xp, X[s::K, :], sdt), axis=0))
                counts[f] += len(range(s, n_b, K))
            sums = xp.stack(sums)
            seen = sums if seen is None else seen + sums
            position += n_b
            yield (Z, Y, X) if features else (Z, Y)
        if tuple(counts) != tuple(self.fold_sizes):
            raise DataError(f"the second pass saw {sum(counts)} rows (per fold {tuple(counts)}) but the first saw "
                            f"{sum(self.fold_sizes)} (per fold {tuple(self.fold_sizes)}): the source must replay "
                            "the same rows in the same order")
        if seen is not None:
            ref = xp.asarray(self.fold_sums, device=device_of(seen))
            scale = xp.max(xp.abs(ref)) + xp.max(xp.abs(seen))
            tol = 1e-4 if sdt == xp.float32 else 1e-9
            if float(xp.max(xp.abs(seen - ref))) > tol * float(scale) + 1e-30:
                raise DataError("the second pass's rows differ from the first pass's (per-fold feature sums "
                                "disagree): the source must replay the same rows in the same order "
                                "(no shuffling between passes)")


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold scores of every row (:func:`out_of_fold_scores`).

    Attributes
    ----------
    logits : array, shape (n, l)
        Row ``i``'s logits from the head that did not see it.
    labels : array, shape (n,) or None
        The given integer labels in stream order (None when targets were a matrix).
    heads : FoldHeads
    """

    logits: Any
    labels: Any
    heads: FoldHeads


def out_of_fold_scores(batches: Iterable, n_classes: int, /, *, folds: int = DEFAULT_FOLDS,
                       ridge: float = DEFAULT_OOF_RIDGE) -> OutOfFold:
    """Two passes over ``(X, Y)`` batches: fold statistics, then every row's out-of-fold logits.

    Parameters
    ----------
    batches : re-iterable of (X, Y)
        Features ``(n_b, q)`` and labels ``(n_b,)`` or targets ``(n_b, l)``; iterated twice
        in the same order (a list, a DataLoader without shuffling). Arrays: pass ``[(X, y)]``.
    n_classes : int
    folds : int
        ``K >= 2``.
    ridge : float
        ``lam = ridge * trace(Xc^T Xc) / q`` per head.

    Returns
    -------
    OutOfFold

    Raises
    ------
    DataTypeError
        For a one-shot generator (checked before the first pass).
    DataError
        When the second pass does not replay the first pass's rows.
    """
    require_reiterable(batches)
    acc = OutOfFoldAccumulator(n_classes, folds=folds)
    for X, Y in batches:
        acc.update(X, Y)
    heads = acc.heads(ridge=ridge)
    Zs, Ys = [], []
    for Z, Y in heads.stream(batches):
        Zs.append(Z)
        Ys.append(Y)
    xp = namespace(Zs[0])
    labels = xp.concat(Ys) if getattr(Ys[0], "ndim", None) == 1 else None
    return OutOfFold(logits=xp.concat(Zs, axis=0), labels=labels, heads=heads)
