"""Choosing ``k``: fixed, energy fraction, or scored on held-out data for every k at once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ._arrays import as_features, as_targets, check_product_finite, device_of, namespace, to_float
from .accumulator import LIPAccumulator
from .errors import DataError, OptionError, OptionTypeError
from .options import UNSET, check_confidence, check_min_gain, parse_rank, validation_pair
from .principal import SVD, check_factors, reduced_svd, resolve_rank

__all__ = ["RankSelection", "RankScorer", "select_rank", "candidate_ranks", "sign_test_p", "DEFAULT_CONFIDENCE"]

#: Default confidence of the sign test that guards ``k="auto"`` (see :meth:`RankScorer.best`).
DEFAULT_CONFIDENCE = 0.95

#: Above this many components the automatic choice scores a grid of ranks, not all of them.
FULL_SCAN_LIMIT = 256


@dataclass(frozen=True)
class RankSelection:
    """The chosen ``k`` and the evidence behind it.

    Attributes
    ----------
    k : int
        Components kept untouched; ``k == m`` means the weight is left as it is.
    m : int
        ``min(q, l)``.
    strategy : {"fixed", "energy", "auto"}
    ks : tuple of int
        Ranks that were scored (``auto``) or the whole range (``energy``).
    scores : tuple of float
        Held-out score per entry of ``ks`` (``auto``), or the cumulative
        energy fraction of the top-``k`` components (``energy``); empty for ``fixed``.
    base_score : float or None
        Held-out score of the unchanged model (``k = m``), ``auto`` only.
    n_val : int
        Held-out samples scored (``auto``).
    """

    k: int
    m: int
    strategy: str
    ks: tuple[int, ...] = ()
    scores: tuple[float, ...] = ()
    base_score: float | None = None
    n_val: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether LIP alters the weight (``k < m``)."""
        return self.k < self.m

    @property
    def best_score(self) -> float | None:
        """Held-out score at the chosen ``k`` (``auto``)."""
        if self.strategy != "auto":
            return None
        return self.scores[self.ks.index(self.k)]

    def to_dict(self) -> dict:
        """JSON-friendly view."""
        d = asdict(self)
        d["ks"], d["scores"] = list(self.ks), list(self.scores)
        d["changed"], d["best_score"] = self.changed, self.best_score
        return d


def candidate_ranks(k0: int, m: int, limit: int = FULL_SCAN_LIMIT) -> list[int]:
    """Ranks the automatic choice scores: every ``k`` in ``[k0, m]`` when there
    are at most ``limit`` of them, else ``limit`` values spaced geometrically
    from ``k0`` (dense near the top of the spectrum) plus ``m``."""
    if m - k0 + 1 <= limit:
        return list(range(k0, m + 1))
    ks = {k0, m}
    span = m - k0
    for j in range(limit - 1):
        ks.add(k0 + int(round(span * (1.0 - (1.0 - j / (limit - 1)) ** 2))))
    return sorted(ks)


class RankScorer:
    """Held-out score of ``W*(k)`` for many ``k`` in one streaming pass, with a
    paired test against the unchanged model.

    ``W*(k)`` and ``W*(k+1)`` differ by the rank-one term
    ``(sigma_k - s_k) u_k v_k^T`` (the refit ``sigma_i`` do not depend on
    ``k``), so one pass over the held-out data scores every rank.

    Steps
    -----
    1. Per batch: base logits ``Z = X W + 1 b^T`` (the model as it is, ``k = m``)
       and ``P = X U`` on the tracked components.
    2. Walk the candidate ranks from ``m`` down, adding the block
       ``P[:, k:k'] diag(sigma - s)[k:k'] V[:, k:k']^T`` to ``Z``.
    3. At each candidate, the per-sample hit ``h_i(k)`` of ``argmax Z``: 1 for
       the right label (integer labels), ``Y[i, pred] / max_j Y[i, j]`` for a
       target matrix (candidate sets: 1 when the prediction is a candidate).
    4. Add up, per candidate: the hits ``sum_i h_i(k)``, and the paired
       wins ``#{i : h_i(k) > h_i(m)}`` and losses ``#{i : h_i(k) < h_i(m)}``
       against the unchanged model.

    :meth:`best` then keeps the model unchanged unless a rank beats it by a
    margin that a one-sided **sign test** on wins vs losses finds
    significant (Bonferroni-corrected over the candidates). Held-out labels
    may be noisy: under label noise that does not depend on the model, a
    model that agrees more often with the noisy labels is, in expectation,
    the more accurate one on clean labels, and the test keeps the choice
    from chasing noise. That premise fails for class-dependent (asymmetric)
    noise in the held-out labels: a change that agrees more with a
    systematic flip can pass the test and cost clean accuracy (seen on
    digits with 40 % asymmetric noise for non-default variants, see
    docs/EVIDENCE.md); use clean or symmetric-noise validation data there.

    All sums are one flat array (:attr:`partial_sums`) that workers can
    all-reduce.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import LIPAccumulator, RankScorer
    >>> rng = np.random.default_rng(0)
    >>> W, X, y = rng.normal(size=(6, 3)), rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    >>> acc = LIPAccumulator(W).update(X, y)
    >>> sel = RankScorer(acc).update(X, y).best()
    >>> 0 <= sel.k <= 3
    True
    """

    def __init__(self, accumulator: LIPAccumulator, /, ks: Sequence[int] | None = None) -> None:
        if not isinstance(accumulator, LIPAccumulator):
            raise OptionTypeError(f"RankScorer needs a LIPAccumulator; got {type(accumulator).__name__}")
        acc = accumulator
        self._acc = acc
        self._xp = xp = acc._xp
        k0, m = acc.tracked
        if ks is None:
            ks = candidate_ranks(k0, m)
        ks = sorted({parse_rank(k, m, name="candidate rank", allow_auto=False, allow_fraction=False)
                     for k in ks} | {m})
        if ks[0] < k0:
            raise OptionError(f"candidate ranks below {k0} are not tracked by the accumulator; got {ks[0]}")
        self.ks = tuple(ks)
        wdt = acc.svd.s.dtype
        self._sig = acc.sigmas()
        self._delta = self._sig - acc.svd.s[k0:]
        self._W = to_float(xp, acc._W, wdt)
        # Rows of V_t^T scaled by the refit change, contiguous: each candidate's block update is then a
        # product with whole rows (a strided (l, 1) column of V made NumPy's matmul ~10x slower).
        self._dVt = xp.asarray(xp.linalg.matrix_transpose(acc.svd.V[:, k0:]) * self._delta[:, None], copy=True)
        # Layout: hits (K) | wins (K) | losses (K) | n
        self._K = len(self.ks)
        self._sums = xp.zeros((3 * self._K + 1,), dtype=acc._sdt, device=acc._device)

    @property
    def partial_sums(self) -> Any:
        """Hits, wins and losses per candidate rank, then the sample count (sum-reducible)."""
        return self._sums

    def load_partial_sums(self, sums: Any, /) -> "RankScorer":
        """Replace the sums, e.g. with their all-reduced total."""
        if getattr(sums, "shape", None) != tuple(self._sums.shape):
            raise DataError(
                f"partial sums must have shape {tuple(self._sums.shape)}; got {tuple(getattr(sums, 'shape', ()))}"
            )
        self._sums = self._xp.astype(sums, self._sums.dtype)
        return self

    def update(self, X: Any, Y: Any, /) -> "RankScorer":
        """Score a held-out batch: features ``(n_b, q)``, labels ``(n_b,)`` or targets ``(n_b, l)``."""
        xp, acc = self._xp, self._acc
        namespace(acc._W, X, Y)
        q, l = acc.shape
        wdt = acc.svd.s.dtype
        X = as_features(xp, X, q, wdt, "X_val", finite=False)
        Y, is_labels = as_targets(xp, Y, int(X.shape[0]), l, wdt, "Y_val")
        sdt = acc._sdt
        rowmax = None if is_labels else _row_max(xp, Y)
        Z = X @ self._W
        check_product_finite(xp, Z, X, "X_val")
        if acc.bias is not None:
            Z = Z + acc.bias
        k0, m = acc.tracked
        P = X @ acc.svd.U[:, k0:]
        per_k: list[Any] = []
        upper = m
        for k in reversed(self.ks):
            if k < upper:
                # Z is this update's own array: added to in place (an out-of-place add where the
                # library has immutable arrays, e.g. JAX).
                if upper - k == 1:  # one component: an outer product, no matmul
                    Z += P[:, k - k0:upper - k0] * self._dVt[k - k0, :]
                else:
                    Z += P[:, k - k0:upper - k0] @ self._dVt[k - k0:upper - k0, :]
                upper = k
            per_k.append(_hits(xp, Z, Y, is_labels, rowmax, sdt))
        per_k.reverse()
        base = per_k[-1]
        hits = [xp.reshape(xp.sum(h), (1,)) for h in per_k]
        wins = [xp.reshape(xp.sum(xp.astype(h > base, sdt)), (1,)) for h in per_k]
        losses = [xp.reshape(xp.sum(xp.astype(h < base, sdt)), (1,)) for h in per_k]
        count = xp.asarray([float(X.shape[0])], dtype=sdt, device=acc._device)
        self._sums = self._sums + xp.concat(hits + wins + losses + [count])
        return self

    @property
    def n_samples(self) -> int:
        """Held-out samples scored so far."""
        return int(self._sums[-1])

    def _block(self, j: int) -> tuple[float, ...]:
        K = self._K
        return tuple(float(v) for v in self._sums[j * K:(j + 1) * K])

    def scores(self) -> tuple[float, ...]:
        """Mean hit score per candidate rank (in the order of :attr:`ks`)."""
        n = self.n_samples
        if n == 0:
            raise DataError("the scorer has seen no held-out data: call update(X_val, Y_val) first")
        return tuple(h / n for h in self._block(0))

    def p_values(self) -> tuple[float, ...]:
        """One-sided sign-test p-value per candidate: ``P[Bin(w + l, 1/2) >= w]``
        for ``w`` wins and ``l`` losses against the unchanged model (1 for ``k = m``;
        reported as 1 without computing it where ``w <= l``: such a rank cannot pass)."""
        return _p_values(self._block(1), self._block(2))

    def best(self, min_gain: float = 0.0, confidence: float | None = DEFAULT_CONFIDENCE) -> RankSelection:
        """The best-scoring ``k`` among the ranks that significantly beat the unchanged model.

        Steps
        -----
        1. Candidate ``k`` qualifies if its held-out score beats the unchanged
           model's by more than ``min_gain`` and, unless ``confidence`` is
           ``None``, its sign-test p-value is below ``(1 - confidence) / K``
           (Bonferroni over the ``K - 1`` ranks other than ``m``).
        2. Among qualifying ranks the highest score wins; ties go to the larger
           ``k`` (the smaller change). No qualifying rank: ``k = m``, the
           weight is left as it is.
        """
        scores = self.scores()
        pvals = self.p_values()
        m = self._acc.svd.rank_max
        base = scores[-1]
        ok = _significant(scores, pvals, base, min_gain, confidence, tests=self._K - 1)
        k = m
        if ok:
            k = self.ks[max(ok, key=lambda i: (scores[i], self.ks[i]))]
        return RankSelection(
            k=k, m=m, strategy="auto", ks=self.ks, scores=scores, base_score=base,
            n_val=self.n_samples,
            extra={"min_gain": float(min_gain), "confidence": confidence,
                   "p_values": list(pvals), "wins": list(self._block(1)), "losses": list(self._block(2))},
        )


def sign_test_p(wins: int, losses: int) -> float:
    """One-sided sign-test p-value ``P[Bin(wins + losses, 1/2) >= wins]``.

    Exact (integer arithmetic, binomial coefficients by a running product) up
    to 5,000 discordant pairs, then the normal approximation with a
    continuity correction.

    Examples
    --------
    >>> round(sign_test_p(5, 0), 5)
    0.03125
    >>> sign_test_p(0, 0)
    1.0
    """
    n = wins + losses
    if n == 0 or wins <= 0:
        return 1.0
    if n <= 5000:
        c = math.comb(n, wins)
        tail = c
        for i in range(wins, n):
            c = c * (n - i) // (i + 1)
            tail += c
        return tail / (1 << n)  # exact big-int division, correctly rounded
    z = (wins - 0.5 - n / 2.0) / math.sqrt(n / 4.0)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _onehot_mask(xp: Any, pred: Any, l: int, device: Any) -> Any:
    classes = xp.astype(xp.arange(l, device=device), pred.dtype)
    return pred[:, None] == classes[None, :]


def _row_max(xp: Any, Y: Any) -> Any:
    """Per-row maximum of a target matrix (1 where a row has no positive entry)."""
    rowmax = xp.max(Y, axis=1)
    return xp.where(rowmax > 0, rowmax, xp.ones_like(rowmax))


def _hits(xp: Any, Z: Any, Y: Any, is_labels: bool, rowmax: Any, sdt: Any) -> Any:
    """Per-sample hit of ``argmax Z``: 1 for the right integer label; for a target
    matrix ``Y[i, pred] / max_j Y[i, j]`` (``rowmax`` from :func:`_row_max`)."""
    pred = xp.argmax(Z, axis=1)
    if is_labels:
        return xp.astype(pred == xp.astype(Y, pred.dtype), sdt)
    mask = _onehot_mask(xp, pred, int(Y.shape[1]), device_of(Y))
    picked = xp.sum(xp.where(mask, Y, xp.zeros_like(Y)), axis=1)
    return xp.astype(picked / rowmax, sdt)


def _p_values(wins: Sequence[float], losses: Sequence[float]) -> tuple[float, ...]:
    """One-sided sign-test p-value per candidate (1 without computing it where wins <= losses)."""
    return tuple(sign_test_p(int(round(w)), int(round(ls))) if w > ls else 1.0 for w, ls in zip(wins, losses))


def _significant(scores: Sequence[float], p_values: Sequence[float], base: float, min_gain: float,
                 confidence: float | None, *, tests: int) -> list[int]:
    """The guard of every automatic choice: indices of the candidates whose held-out
    score beats ``base`` (the unchanged model) by more than ``min_gain`` and, unless
    ``confidence`` is None, whose sign-test p-value is below ``(1 - confidence) / tests``
    (Bonferroni over the ``tests`` candidates other than the unchanged model)."""
    confidence = check_confidence(confidence)
    min_gain = check_min_gain(min_gain)
    alpha = None if confidence is None else (1.0 - confidence) / max(1, int(tests))
    return [i for i in range(len(scores))
            if scores[i] > base + min_gain and (alpha is None or p_values[i] < alpha)]


def select_rank(
    W: Any,
    /,
    rank: int | float | str = "auto",
    *,
    accumulator: LIPAccumulator | None = None,
    validation: tuple[Any, Any] | None = None,
    min_gain: float = 0.0,
    confidence: float | None = DEFAULT_CONFIDENCE,
    ks: Sequence[int] | None = None,
    svd: SVD | None = None,
    xp: Any = None,
    X_val: Any = UNSET,
    Y_val: Any = UNSET,
) -> RankSelection:
    """Choose how many principal components LIP keeps.

    Strategies
    ----------
    1. ``rank`` an int: that ``k`` (validated to ``[0, min(q, l)]``).
    2. ``rank`` a float in ``(0, 1]``: the smallest ``k`` whose components hold
       that fraction of ``||W||_F^2`` (:func:`lip_agnostic.energy_rank`).
    3. ``rank="auto"`` (the product's default): every candidate ``k`` is
       scored on held-out data ``validation=(X_val, Y_val)`` — noisy labels
       are fine (``X_val=, Y_val=``, the old spelling, still work with a
       ``FutureWarning``) —
       with the tail refit taken from a fitted ``accumulator`` (built with
       ``k=None``); among the ranks that beat the unchanged model by more
       than ``min_gain`` **and** pass a one-sided sign test at
       ``confidence`` (Bonferroni-corrected; ``None`` switches the test off),
       the best score wins, ties go to the smaller change; when none
       qualifies the weight is left untouched (``k = m``). This default
       ("do no harm unless the held-out data show a significant gain") is
       what every face uses.

    Factors: a fixed ``rank`` needs none (only ``min(q, l)``); an energy
    fraction needs the spectrum, taken from ``svd`` (the reduced SVD of ``W``
    the caller already has), else from ``accumulator.svd``, else from one
    :func:`lip_agnostic.reduced_svd`; ``"auto"`` uses the accumulator's.

    Returns
    -------
    RankSelection
        ``k`` plus the whole score curve.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import select_rank
    >>> select_rank(np.diag([3.0, 1.0, 0.1]), 0.85).k
    1
    """
    xp = namespace(W, xp=xp)
    X_val, Y_val = validation_pair(validation, X_val, Y_val)
    rank = parse_rank(rank, name="rank")
    if rank == "auto":
        if accumulator is None:
            raise OptionError("rank='auto' needs a fitted accumulator (LIPAccumulator(W).update(X, Y))")
        if accumulator.shape != tuple(W.shape):
            raise DataError(f"accumulator was built for a weight of shape {accumulator.shape}; W has shape {tuple(W.shape)}")
        if X_val is None or Y_val is None:
            raise OptionError("rank='auto' needs held-out data: pass validation=(X_val, Y_val)")
        return RankScorer(accumulator, ks=ks).update(X_val, Y_val).best(min_gain, confidence)
    m = min(int(W.shape[0]), int(W.shape[1]))
    if isinstance(rank, float):
        if svd is not None:
            f = check_factors(svd, tuple(W.shape))
        elif accumulator is not None and accumulator.shape == tuple(W.shape):
            f = accumulator.svd
        else:
            f = reduced_svd(W, xp=xp)
        k = resolve_rank(rank, f.s, name="rank", xp=xp)
        e = f.s * f.s
        cum = xp.cumulative_sum(e) / xp.sum(e) if float(xp.sum(e)) > 0 else xp.zeros_like(e)
        return RankSelection(
            k=k, m=m, strategy="energy", ks=tuple(range(1, m + 1)),
            scores=tuple(float(c) for c in cum), extra={"fraction": rank},
        )
    return RankSelection(k=parse_rank(rank, m, name="rank"), m=m, strategy="fixed")
