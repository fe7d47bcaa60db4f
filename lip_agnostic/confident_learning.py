"""Confident learning on any array library (Northcutt, Jiang & Chuang, JAIR 2021) (beyond the paper).

Flags the rows whose given label disagrees with out-of-sample probabilities, with the
rule of cleanlab's ``cleanlab.filter.find_label_issues`` at its defaults
(``filter_by="prune_by_noise_rate"``, ``frac_noise=1``, ``min_examples_per_class=1``),
replicated step for step so that the flags agree with cleanlab on the same probabilities,
but computed in the caller's array namespace and on its device (a GPU included), and
without cleanlab installed.

The rule, as steps
------------------
``P (n, l)`` out-of-sample probabilities, ``y`` the given labels, ``c_k`` the rows per
given class.

1. Per-class thresholds: ``t_k = mean_{i: y_i = k} P_ik`` (2 for a class without rows,
   so nothing counts for it), clipped below at ``2e-6``.
2. A row is confident for class ``j`` if ``P_ij >= t_j - 1e-6``. Its guessed true label
   is the most probable class when it is confident for two or more, the single confident
   class when one, none when it is confident for none.
3. The confident joint ``C[k, j]`` counts rows with given label ``k`` and guess ``j``;
   its diagonal is raised to at least 1.
4. Calibration: each row ``k`` is rescaled to sum to ``c_k``, the whole matrix to sum to
   ``n``, and every row is rounded to integers preserving its total (round half to even;
   the missing units go to the entries with the largest rounding loss, or come from those
   with the largest gain).
5. Prune counts ``M = C^T`` (true x given): a zero diagonal entry is raised to 1 and the
   increase taken evenly from the column's non-zero off-diagonal entries (clipped at 0);
   entries are truncated to integers.
6. For every given class ``k`` with at least 2 rows and every ``j != k``, the ``M[j, k]``
   rows of class ``k`` with the largest margin ``P_ij - P_ik`` are flagged.
7. A flag is dropped where the given label is still the argmax once it gets ``+1e-6``.

The score of a row is its self-confidence ``P_i,y_i`` (lower is more suspect) and its
suggested label the argmax of ``P_i``.

Cost: ``O(n l)`` memory, ``O(l n log n)`` time (two stable sorts per class in step 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._arrays import count_true, device_of, namespace, stats_dtype, to_float
from .errors import DataError, DataTypeError, NonFiniteError
from .suspects import SuspectLabels

__all__ = ["ConfidentLearning", "confident_learning", "confident_joint", "round_preserving_row_totals"]

_FUZZ = 1e-6  # cleanlab's FLOATING_POINT_COMPARISON
_THRESHOLD_FLOOR = 2 * _FUZZ  # cleanlab's CONFIDENT_THRESHOLDS_LOWER_BOUND
_MISSING_CLASS_THRESHOLD = 2.0  # above every probability: a class without rows is never confident


def _check_probs_labels(xp: Any, P: Any, labels: Any) -> None:
    if getattr(P, "ndim", None) != 2:
        raise DataError(f"probs must be 2-D (n samples, l classes); got shape {tuple(getattr(P, 'shape', ()))}")
    if not xp.isdtype(P.dtype, "real floating"):
        raise DataTypeError(f"probs must have a real floating dtype; got {P.dtype}")
    n, l = int(P.shape[0]), int(P.shape[1])
    if n == 0 or l < 2:
        raise DataError(f"probs must have at least one row and two classes; got shape {(n, l)}")
    if getattr(labels, "ndim", None) != 1 or not xp.isdtype(labels.dtype, "integral"):
        raise DataTypeError(f"labels must be 1-D integer class labels; got shape "
                            f"{tuple(getattr(labels, 'shape', ()))}, dtype {getattr(labels, 'dtype', None)}")
    if int(labels.shape[0]) != n:
        raise DataError(f"probs has {n} rows but labels has {int(labels.shape[0])}")
    lo, hi = int(xp.min(labels)), int(xp.max(labels))
    if lo < 0 or hi >= l:
        raise DataError(f"labels must lie in [0, {l}) for {l} classes; got min {lo}, max {hi}")
    if not bool(xp.all(xp.isfinite(P))):
        raise NonFiniteError(f"probs contains {count_true(xp, ~xp.isfinite(P))} NaN/Inf value(s)")
    if bool(xp.any(P < 0)) or bool(xp.any(P > 1)):
        raise DataError(f"probs must lie in [0, 1] (softmax probabilities); got min {float(xp.min(P)):.4g}, "
                        f"max {float(xp.max(P)):.4g}")


def round_preserving_row_totals(A: Any, /, *, xp: Any = None) -> Any:
    """Round each row of ``A`` to integers whose sum is the row's rounded sum (step 4).

    Rows are rounded half to even; where the rounded entries miss the rounded total by
    ``d``, the ``|d|`` entries with the largest ``A - round(A)`` gain one (``d > 0``), or
    those with the smallest lose one (``d < 0``), repeated until the totals match.
    The result keeps ``A``'s floating dtype (integer values).

    Examples
    --------
    >>> import numpy as np
    >>> round_preserving_row_totals(np.array([[0.4, 0.4, 0.2]])).tolist()
    [[0.0, 1.0, 0.0]]
    """
    xp = namespace(A, xp=xp)
    l = int(A.shape[1])
    ints = xp.round(A)
    target = xp.round(xp.sum(A, axis=1))
    for _ in range(l + 2):  # each round fixes min(|d|, l) units of every row; |d| <= l/2 + 1 after rounding
        total = xp.round(xp.sum(ints, axis=1))
        if not bool(xp.any(xp.abs(total - target) > _FUZZ)):
            break
        d = xp.round(target - total)
        up = d >= 0
        changes = xp.minimum(xp.abs(d), float(l))
        asc = xp.argsort(A - ints, axis=1, stable=True)
        rank = xp.astype(xp.argsort(asc, axis=1, stable=True), A.dtype)  # rank of each entry, ascending
        # d > 0: cleanlab takes the reversed ascending order (largest loss first); d < 0: ascending
        pos = xp.where(up[:, None], (l - 1) - rank, rank)
        pick = (pos < changes[:, None]) & (xp.abs(d) > _FUZZ)[:, None]
        step = xp.where(up, xp.ones_like(d), -xp.ones_like(d))
        ints = ints + xp.where(pick, step[:, None], xp.zeros_like(ints))
    return ints


def _onehot(xp: Any, labels: Any, l: int, dtype: Any) -> Any:
    classes = xp.astype(xp.arange(l, device=device_of(labels)), labels.dtype)
    return xp.astype(labels[:, None] == classes[None, :], dtype)


def confident_joint(probs: Any, labels: Any, /, *, xp: Any = None) -> tuple[Any, Any]:
    """The calibrated confident joint (steps 1-4) and the per-class thresholds.

    Returns
    -------
    (joint, thresholds)
        ``joint (l, l)``: rows given label, columns guessed true label, integer counts
        summing to ``n`` (in ``probs``' floating dtype, float64 where available);
        ``thresholds (l,)``.

    Examples
    --------
    >>> import numpy as np
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> C, t = confident_joint(P, np.array([0, 0, 1, 1]))
    >>> C.tolist()
    [[2.0, 0.0], [0.0, 2.0]]
    """
    xp = namespace(probs, labels, xp=xp)
    _check_probs_labels(xp, probs, labels)
    return _joint(xp, probs, labels)


def _joint(xp: Any, probs: Any, labels: Any) -> tuple[Any, Any]:
    sdt = stats_dtype(xp, device_of(probs))
    P = to_float(xp, probs, sdt)
    l = int(P.shape[1])
    Y = _onehot(xp, labels, l, sdt)
    counts = xp.sum(Y, axis=0)
    # step 1
    safe = xp.where(counts > 0, counts, xp.ones_like(counts))
    t = xp.where(counts > 0, xp.sum(P * Y, axis=0) / safe, xp.full_like(counts, _MISSING_CLASS_THRESHOLD))
    t = xp.maximum(t, xp.full_like(t, _THRESHOLD_FLOOR))
    # step 2
    B = P >= (t - _FUZZ)[None, :]
    nconf = xp.sum(xp.astype(B, sdt), axis=1)
    first = xp.argmax(xp.astype(B, sdt), axis=1)  # first confident class (argmax returns the first maximum)
    guess = xp.where(nconf > 1, xp.argmax(P, axis=1), first)
    # step 3
    G = _onehot(xp, xp.astype(guess, labels.dtype), l, sdt) * xp.astype(nconf > 0, sdt)[:, None]
    C = xp.linalg.matrix_transpose(Y) @ G
    eye = xp.eye(l, dtype=sdt, device=device_of(P))
    C = C + eye * xp.maximum(1.0 - C, xp.zeros_like(C))
    # step 4 (the order of operations is cleanlab's, so the floats match)
    tiny = xp.finfo(sdt).smallest_normal
    rows = xp.maximum(xp.sum(C, axis=1), xp.full_like(counts, tiny))
    cal = C / rows[:, None] * counts[:, None]
    # cleanlab sums this matrix in column-major order (its array is a transpose): an entry that lands on
    # k + 0.5 rounds by the last bit of that sum, so the same order is used here
    total = float(xp.sum(xp.reshape(xp.linalg.matrix_transpose(cal), (-1,))))
    cal = cal / max(total, tiny) * float(xp.sum(counts))
    return round_preserving_row_totals(cal, xp=xp), t


def _prune_counts(xp: Any, joint: Any) -> Any:
    """Step 5: ``M[j, k]`` rows of given class ``k`` to flag as truly ``j``."""
    M = xp.linalg.matrix_transpose(joint)
    l = int(M.shape[0])
    eye = xp.eye(l, dtype=M.dtype, device=device_of(M))
    diag = xp.sum(M * eye, axis=0)
    new_diag = xp.maximum(diag, xp.ones_like(diag))
    nonzero = xp.sum(xp.astype(M != 0, M.dtype), axis=0)
    per = xp.maximum(nonzero - 1.0, xp.ones_like(nonzero))
    new = M - ((new_diag - diag) / per)[None, :]
    new = xp.maximum(new, xp.zeros_like(new))
    new = new * (1.0 - eye) + eye * new_diag[None, :]
    return xp.floor(new)


@dataclass(frozen=True)
class ConfidentLearning(SuspectLabels):
    """:class:`~lip_agnostic.suspects.SuspectLabels` from confident learning, with its intermediate counts.

    Attributes (besides SuspectLabels')
    ----------
    thresholds : array, shape (l,)
        Per-class thresholds ``t_k`` (step 1).
    joint : array, shape (l, l)
        The calibrated confident joint, given label x guessed true label (step 4).
    prune_counts : array, shape (l, l)
        ``M``, true x given: how many rows of each given class step 6 flags per true class.
    """

    thresholds: Any = None
    joint: Any = None
    prune_counts: Any = None


def confident_learning(probs: Any, labels: Any, /, *, xp: Any = None) -> ConfidentLearning:
    """Flag label issues by confident learning (module docstring, steps 1-7).

    Parameters
    ----------
    probs : array, shape (n, l)
        Out-of-sample probabilities (e.g. ``softmax(T * out-of-fold logits)``,
        :mod:`lip_agnostic.out_of_fold`, :func:`lip_agnostic.temperature.fit_temperature`).
    labels : array of int, shape (n,)
        The given labels.

    Returns
    -------
    ConfidentLearning
        ``flags`` equal ``cleanlab.filter.find_label_issues(labels, probs)`` (default
        arguments) up to ties between equal margins; ``score`` is the self-confidence
        ``P_i,y_i``; ``suggested`` the argmax of ``P_i``.

    Examples
    --------
    >>> import numpy as np
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9], [0.95, 0.05]])
    >>> y = np.array([0, 0, 0, 1, 1, 1])
    >>> confident_learning(P, y).flags.tolist()
    [False, False, False, False, False, True]
    """
    xp = namespace(probs, labels, xp=xp)
    _check_probs_labels(xp, probs, labels)
    joint, t = _joint(xp, probs, labels)
    M = _prune_counts(xp, joint)
    sdt = joint.dtype
    P = to_float(xp, probs, sdt)
    n, l = int(P.shape[0]), int(P.shape[1])
    Y = _onehot(xp, labels, l, sdt)
    counts = xp.sum(Y, axis=0)
    starts = xp.cumulative_sum(counts) - counts if hasattr(xp, "cumulative_sum") else None
    if starts is None:  # namespaces before the 2023.12 standard
        starts = xp.cumsum(counts) - counts
    p_given = xp.sum(P * Y, axis=1)
    row_start = Y @ starts  # start of each row's class block in a class-grouped order
    big_class = (Y @ counts) > 1  # min_examples_per_class = 1: a class of one row is never pruned
    flags = xp.zeros((n,), dtype=xp.bool, device=device_of(P))
    for j in range(l):
        quota = Y @ M[j, :]  # M[j, y_i]: rows of class y_i to flag as truly j
        quota = quota * xp.astype(labels != j, sdt)
        if not bool(xp.any(quota > 0)):
            continue
        margin = P[:, j] - p_given
        order = xp.argsort(-margin, stable=True)  # largest margin first
        grouped = xp.take(order, xp.argsort(xp.take(labels, order, axis=0), stable=True), axis=0)
        pos = xp.astype(xp.argsort(grouped, stable=True), sdt)  # position of each row in the grouped order
        flags = flags | ((pos - row_start) < quota)
    flags = flags & big_class
    # step 7
    keep = xp.argmax(P + _FUZZ * Y, axis=1)
    flags = flags & (xp.astype(keep, labels.dtype) != labels)
    return ConfidentLearning(
        flags=flags,
        score=to_float(xp, p_given, probs.dtype),
        suggested=xp.astype(xp.argmax(P, axis=1), labels.dtype),
        labels=labels,
        method="confident learning (prune_by_noise_rate); score = self-confidence P[i, y_i]",
        thresholds=t,
        joint=joint,
        prune_counts=M,
    )
