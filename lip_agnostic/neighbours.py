"""Label disagreement with a row's nearest neighbours in feature space (beyond the paper).

A label that none of a row's neighbours share, on the network's penultimate features, is
suspect; the neighbours' vote is a suggestion for it. This needs no model and no held-out
data, only the features and the given labels, and it keeps working where out-of-fold
heads lose recall (a linear head refit on the same features learns the same flips).

The vote, as steps
------------------
1. Reference rows ``R``: every row (exact), or ``reference=m`` rows drawn at random
   without replacement (seeded) for large ``n``.
2. Distances of a chunk of query rows to ``R``: cosine (``-<x/|x|, r/|r|>``; a zero row
   is at distance 0 from everything) or squared Euclidean up to the query's own norm
   (``|r|^2 - 2 <x, r>``, which orders the references as ``|x - r|^2`` does). A row is
   never its own neighbour.
3. The ``k``-th smallest distance ``d_k`` per query row, counted with multiplicity (a
   selection where the array library has one, a sort otherwise); the neighbours are the
   references with distance ``<= d_k`` (more than ``k`` only when distances tie at ``d_k``).
4. ``votes[i, c]`` is the fraction of row ``i``'s neighbours labelled ``c``. The score is
   ``votes[i, y_i]`` (lower is more suspect); a row is flagged when another class has
   strictly more votes than its given label, and its suggested label is the class with
   the most votes (the lowest such class on a tie; the given label when not flagged).

Cost: ``O(chunk_size * m)`` memory for the distances plus ``O(n l)`` for the votes;
``O(n m q)`` time (the distances; the selection is ``O(n m)``). With ``n`` up to a few ten thousand the exact vote is cheap; for
larger ``n`` pass ``reference=m`` (e.g. 20 000): the vote is then over the ``k`` nearest
of ``m`` random rows, ``O(n m)`` instead of ``O(n^2)``.

Examples
--------
>>> import numpy as np
>>> X = np.array([[0.0, 1.0], [0.2, 1.0], [0.0, 1.2], [0.1, 0.9], [1.0, 0.0], [1.0, 0.2], [1.2, 0.0], [0.9, 0.1]])
>>> y = np.array([0, 0, 1, 0, 1, 1, 1, 1])          # row 2 sits among the 0s
>>> r = neighbour_disagreement(X, y, 2, k=3)
>>> r.flags.tolist(), r.suggested.tolist()
([False, False, True, False, False, False, False, False], [0, 0, 0, 0, 1, 1, 1, 1])
"""

from __future__ import annotations

import numbers
import random
from dataclasses import dataclass
from typing import Any

from ._arrays import as_features, device_of, kth_smallest, namespace, working_dtype
from .errors import DataError, DataTypeError, OptionError, OptionTypeError
from .suspects import SuspectLabels

__all__ = ["NeighbourVote", "neighbour_disagreement", "ReferenceVote", "vote_flags", "DEFAULT_NEIGHBOURS"]

#: Neighbours per row in :func:`neighbour_disagreement`.
DEFAULT_NEIGHBOURS = 10
_METRICS = ("cosine", "euclidean")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionTypeError(f"{name} must be a positive int; got {value!r}")
    if int(value) < 1:
        raise OptionError(f"{name} must be a positive int; got {value!r}")
    return int(value)


@dataclass(frozen=True)
class NeighbourVote(SuspectLabels):
    """:class:`~lip_agnostic.suspects.SuspectLabels` from the neighbour vote.

    Attributes (besides SuspectLabels')
    ----------
    votes : array, shape (n, l)
        Fraction of each row's neighbours per class.
    k : int
    metric : str
    n_reference : int
        Reference rows the neighbours were drawn from (``n`` when exact).
    """

    votes: Any = None
    k: int = DEFAULT_NEIGHBOURS
    metric: str = "cosine"
    n_reference: int = 0


def neighbour_disagreement(features: Any, labels: Any, n_classes: int, /, *, k: int = DEFAULT_NEIGHBOURS,
                           metric: str = "cosine", chunk_size: int = 1024, reference: int | None = None,
                           seed: int = 0, xp: Any = None) -> NeighbourVote:
    """Flag rows whose ``k`` nearest neighbours out-vote their label (module docstring, steps 1-4).

    Parameters
    ----------
    features : array, shape (n, q)
        Penultimate features (the classifier head's input).
    labels : array of int, shape (n,)
    n_classes : int
    k : int
        Neighbours per row, ``1 <= k < number of reference rows``.
    metric : {"cosine", "euclidean"}
    chunk_size : int
        Query rows per distance block (memory ``chunk_size * m``).
    reference : int, optional
        Draw this many reference rows at random (large ``n``); None: every row (exact).
    seed : int
        Seed of the reference draw.

    Returns
    -------
    NeighbourVote
    """
    xp = namespace(features, labels, xp=xp)
    if getattr(features, "ndim", None) != 2:
        raise DataError(f"features must be 2-D (n samples, q features); got shape "
                        f"{tuple(getattr(features, 'shape', ()))}")
    n, q = int(features.shape[0]), int(features.shape[1])
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or int(n_classes) < 2:
        raise OptionError(f"n_classes must be an int >= 2; got {n_classes!r}")
    l = int(n_classes)
    if getattr(labels, "ndim", None) != 1 or not xp.isdtype(labels.dtype, "integral"):
        raise DataTypeError(f"labels must be 1-D integer class labels; got shape "
                            f"{tuple(getattr(labels, 'shape', ()))}, dtype {getattr(labels, 'dtype', None)}")
    if int(labels.shape[0]) != n:
        raise DataError(f"features has {n} rows but labels has {int(labels.shape[0])}")
    if n == 0:
        raise DataError("features must have at least one row")
    lo, hi = int(xp.min(labels)), int(xp.max(labels))
    if lo < 0 or hi >= l:
        raise DataError(f"labels must lie in [0, {l}) for n_classes={l}; got min {lo}, max {hi}")
    if metric not in _METRICS:
        raise OptionError(f"metric must be one of {_METRICS}; got {metric!r}")
    k = _positive_int(k, "k")
    chunk_size = _positive_int(chunk_size, "chunk_size")
    dev = device_of(features)
    X = as_features(xp, features, q, working_dtype(xp, features.dtype), "features")
    dt = X.dtype
    # step 1
    if reference is None:
        ref_idx = xp.arange(n, device=dev)
    else:
        m = _positive_int(reference, "reference")
        if m > n:
            raise OptionError(f"reference={m} exceeds the {n} rows")
        picked = sorted(random.Random(seed).sample(range(n), m))
        ref_idx = xp.asarray(picked, device=dev)
    m = int(ref_idx.shape[0])
    if k >= m:
        raise OptionError(f"k={k} must be smaller than the {m} reference rows (a row is not its own neighbour)")
    index = ReferenceVote(xp.take(X, ref_idx, axis=0), xp.take(labels, ref_idx, axis=0), ref_idx, l, k=k,
                          metric=metric)
    V = xp.concat([index.votes(X[a:min(n, a + chunk_size), :], xp.arange(a, min(n, a + chunk_size), device=dev))
                   for a in range(0, n, chunk_size)], axis=0)
    flags, given, suggested = vote_flags(V, labels)
    return NeighbourVote(flags=flags, score=given, suggested=suggested, labels=labels,
                         method=f"{k}-nearest-neighbour vote ({metric}"
                                + (f", {m} random reference rows" if reference is not None else ", exact")
                                + "); score = share of neighbours with the given label",
                         votes=V, k=k, metric=metric, n_reference=m)


class ReferenceVote:
    """The ``k``-nearest-neighbour label vote of query rows among fixed reference rows (steps 2-3).

    Parameters
    ----------
    R : array (m, q)
        Reference features.
    labels : int array (m,)
        Their labels.
    positions : int array (m,)
        Their positions in the stream (a query row at the same position is not its own neighbour).
    n_classes : int
    k : int
        ``1 <= k < m``.
    metric : {"cosine", "euclidean"}
    """

    def __init__(self, R: Any, labels: Any, positions: Any, n_classes: int, /, *, k: int = DEFAULT_NEIGHBOURS,
                 metric: str = "cosine") -> None:
        xp = namespace(R, labels)
        self._xp, self.k, self.metric = xp, _positive_int(k, "k"), metric
        if metric not in _METRICS:
            raise OptionError(f"metric must be one of {_METRICS}; got {metric!r}")
        m = int(R.shape[0])
        if self.k >= m:
            raise OptionError(f"k={self.k} must be smaller than the {m} reference rows (a row is not its own "
                              "neighbour)")
        dt = R.dtype
        classes = xp.astype(xp.arange(n_classes, device=device_of(R)), labels.dtype)
        self._Yr = xp.astype(labels[:, None] == classes[None, :], dt)
        self._pos = positions
        if metric == "cosine":
            self._R, self._rr = _unit(xp, R), None
        else:
            self._R, self._rr = R, xp.sum(R * R, axis=1)
        self._Rt = xp.linalg.matrix_transpose(self._R)

    def votes(self, X: Any, positions: Any, /) -> Any:
        """``(n_b, l)`` vote shares of rows ``X`` at stream ``positions``."""
        xp = self._xp
        Q = _unit(xp, X) if self._rr is None else X
        S = xp.astype(Q, self._Rt.dtype) @ self._Rt
        D = -S if self._rr is None else self._rr[None, :] - 2.0 * S
        inf = xp.asarray(float("inf"), dtype=D.dtype, device=device_of(D))
        D = xp.where(xp.astype(positions, self._pos.dtype)[:, None] == self._pos[None, :], inf, D)
        dk = kth_smallest(xp, D, self.k)  # step 3: the k-th smallest distance per row (ties at it all vote)
        V = xp.astype(D <= dk, self._Yr.dtype) @ self._Yr
        return V / xp.sum(V, axis=1, keepdims=True)


def vote_flags(V: Any, labels: Any, /) -> tuple[Any, Any, Any]:
    """Step 4: ``(flags, score, suggested)`` from vote shares ``V (n, l)`` and the given labels."""
    xp = namespace(V, labels)
    classes = xp.astype(xp.arange(int(V.shape[1]), device=device_of(V)), labels.dtype)
    given = xp.sum(xp.where(labels[:, None] == classes[None, :], V, xp.zeros_like(V)), axis=1)
    flags = given < xp.max(V, axis=1)
    return flags, given, xp.where(flags, xp.astype(xp.argmax(V, axis=1), labels.dtype), labels)


def _unit(xp: Any, A: Any) -> Any:
    norm = xp.sqrt(xp.sum(A * A, axis=1, keepdims=True))
    return A / xp.where(norm > 0, norm, xp.ones_like(norm))
