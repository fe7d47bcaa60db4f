"""The one guarded selection: score every candidate repair on held-out data in one pass, change
the layer only when a paired sign test finds a significant gain.

Every repair (:mod:`lip_agnostic.repairs`) lists its candidates (a rank ``k``,
and for the full tail a ridge ``lam``) and scores them through a subclass of
:class:`HeldOutScorer`, which owns the statistics (hits, paired wins and losses
against the unchanged layer, sum-reducible for an all-reduce) and the guard
(:meth:`HeldOutScorer.best`). :class:`StackedScorer` scores any list of
candidate weights (stacked into a few wide matmuls); the paper's diagonal refit
has its own rank-one fast path (:class:`lip_agnostic.repairs.diagonal.RankScorer`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ._arrays import as_features, as_targets, check_product_finite, device_of, namespace, to_float
from ._sums import FlatSums
from .errors import DataError, OptionError
from .options import DEFAULT_CONFIDENCE, check_confidence, check_min_gain

__all__ = [
    "Selection",
    "HeldOutScorer",
    "StackedScorer",
    "candidate_ranks",
    "sign_test_p",
    "FULL_SCAN_LIMIT",
    "SCORE_GROUP_COLUMNS",
    "LABEL_VARIANTS",
]

#: Above this many components the automatic choice scores a grid of ranks, not all of them.
FULL_SCAN_LIMIT = 256

#: What the held-out score measures, for integer labels and for a target matrix.
METRICS = {
    "labels": "top-1 accuracy against the held-out labels",
    "matrix": "target value of the predicted class / row max (target matrix; 1 = predicted class is a candidate)",
}

#: Columns of the stacked candidate logits a :class:`StackedScorer` computes per matmul (``g l``
#: for a group of ``g`` candidates of an ``l``-class head).
SCORE_GROUP_COLUMNS = 8192


@dataclass(frozen=True)
class Selection:
    """The candidate a repair ran with, and the evidence behind it.

    Attributes
    ----------
    k : int
        Components kept untouched; ``k == m`` means the weight is left as it is.
    m : int
        ``min(q, l)``.
    strategy : {"fixed", "energy", "auto"}
        ``"auto"``: chosen on held-out data behind the guard.
    ks : tuple of int
        Ranks scored (``auto``; ``m``, the unchanged layer, last), or the whole
        range (``energy``).
    scores : tuple of float
        Held-out score per entry of ``ks`` (the best over the ridge grid for the
        full tail), or the cumulative energy fraction (``energy``); empty for ``fixed``.
    base_score : float or None
        Held-out score of the unchanged layer (``auto``).
    n_val : int
        Held-out samples scored.
    ridge : float or None
        Full tail only: the ridge ``lam`` used (None when the layer is unchanged).
    ridges : tuple of float
        Full tail only: the ridge grid scored.
    table : tuple of tuple of float
        Full tail only: ``table[i][j]`` is the held-out score of ``(ks[i], ridges[j])``.
    tail : {"diagonal", "full", "labels"}
        Which repair the candidates belong to (``"diagonal"`` is the paper's).
    labels : {"given", "filter", "relabel", "neighbours"}
        Which labels the chosen head was fit on (beyond the paper, the
        ``"labels"`` repair): as given, without the rows flagged as mislabelled,
        with them relabelled, or relabelled by their nearest neighbours' vote.
    extra : dict
        The guard's evidence (``p_values``, ``wins``, ``losses`` per candidate,
        ``min_gain``, ``confidence``) and where the held-out data came from (``source``).
    """

    k: int
    m: int
    strategy: str
    ks: tuple[int, ...] = ()
    scores: tuple[float, ...] = ()
    base_score: float | None = None
    n_val: int = 0
    ridge: float | None = None
    ridges: tuple[float, ...] = ()
    table: tuple[tuple[float, ...], ...] = ()
    tail: str = "diagonal"
    labels: str = "given"
    extra: dict = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether the repair alters the weight (``k < m``)."""
        return self.k < self.m

    @property
    def best_score(self) -> float | None:
        """Held-out score of what was chosen (the unchanged layer's when ``k = m``)."""
        if self.n_val == 0 or not self.ks:
            return None
        if self.k == self.m:
            return self.base_score
        if self.labels != "given":
            return self.extra["label_scores"][self.labels][self.ridges.index(self.ridge)]
        if self.table and self.ridge is not None:
            return self.table[self.ks.index(self.k)][self.ridges.index(self.ridge)]
        return self.scores[self.ks.index(self.k)]

    def to_dict(self) -> dict:
        """JSON-friendly view (the ridge fields only for the full tail)."""
        d = asdict(self)
        d["ks"], d["scores"] = list(self.ks), list(self.scores)
        d["changed"], d["best_score"] = self.changed, self.best_score
        if self.tail in ("full", "labels"):
            d["ridges"] = list(self.ridges)
            d["table"] = [list(r) for r in self.table]
            d["beyond_paper"] = True
        else:
            for key in ("ridge", "ridges", "table", "tail"):
                d.pop(key)
        if self.tail != "labels":
            d.pop("labels")
        return d


def candidate_ranks(k0: int, m: int, limit: int = FULL_SCAN_LIMIT) -> list[int]:
    """Ranks an automatic choice scores: every ``k`` in ``[k0, m]`` when there
    are at most ``limit`` of them, else ``limit`` values spaced geometrically
    from ``k0`` (dense near the top of the spectrum) plus ``m``.

    >>> candidate_ranks(0, 4)
    [0, 1, 2, 3, 4]
    """
    if m - k0 + 1 <= limit:
        return list(range(k0, m + 1))
    ks = {k0, m}
    span = m - k0
    for j in range(limit - 1):
        ks.add(k0 + int(round(span * (1.0 - (1.0 - j / (limit - 1)) ** 2))))
    return sorted(ks)


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


def _row_max(xp: Any, Y: Any) -> Any:
    """Per-row maximum of a target matrix (1 where a row has no positive entry)."""
    rowmax = xp.max(Y, axis=1)
    return xp.where(rowmax > 0, rowmax, xp.ones_like(rowmax))


def _picked(xp: Any, pred: Any, Y: Any) -> Any:
    """``Y[i, pred_i]`` for predictions ``pred`` of shape ``(n,)`` or ``(n, g)`` (a target matrix)."""
    l = int(Y.shape[1])
    classes = xp.astype(xp.arange(l, device=device_of(Y)), pred.dtype)
    if pred.ndim == 1:
        return xp.sum(xp.where(pred[:, None] == classes[None, :], Y, xp.zeros_like(Y)), axis=1)
    mask = pred[:, :, None] == classes[None, None, :]
    return xp.sum(xp.where(mask, Y[:, None, :], xp.zeros_like(Y[:, None, :])), axis=2)


def _p_values(wins: Sequence[float], losses: Sequence[float]) -> tuple[float, ...]:
    """One-sided sign-test p-value per candidate (1 without computing it where wins <= losses)."""
    return tuple(sign_test_p(int(round(w)), int(round(ls))) if w > ls else 1.0 for w, ls in zip(wins, losses))


class HeldOutScorer(FlatSums):
    """Held-out hits of every candidate and of the unchanged layer, in one streaming pass.

    Steps
    -----
    1. Per batch: the unchanged layer's logits ``Z = X W + 1 b^T`` and every
       candidate's logits (the subclass: :meth:`_candidate_picks`).
    2. Per sample and candidate, the hit of ``argmax``: 1 for the right integer
       label; for a target matrix ``Y[i, pred] / max_j Y[i, j]`` (candidate
       sets: 1 when the prediction is a candidate).
    3. Per candidate: the hits, and the paired wins ``#{i : h_i > h_i(base)}``
       and losses ``#{i : h_i < h_i(base)}`` against the unchanged layer (the
       comparison uses the picked entries themselves, exact, not the quotients
       whose rounding a fused kernel may change).

    The sums are one flat array, ``hits (J) | wins (J) | losses (J) | n`` with
    ``J`` the candidates plus the unchanged layer (last), that workers can
    all-reduce (:attr:`partial_sums`, :meth:`load_partial_sums`).

    Subclasses set ``candidates`` (a tuple of ``(k, lam)``; ``lam`` None for the
    paper's refit; ``(0, lam, labels)`` for a head fit on other labels than the
    given ones, ``labels`` in :data:`LABEL_VARIANTS`) and implement
    :meth:`_candidate_picks`.
    """

    candidates: tuple[tuple, ...]

    def __init__(self, W: Any, bias: Any, m: int, repair: str, candidates: Sequence[tuple[int, float | None]],
                 /, *, xp: Any, work: Any, sdt: Any, device: Any) -> None:
        self._xp = xp
        self._W0 = to_float(xp, W, work)
        self._bias = None if bias is None else to_float(xp, bias, work)
        self._work, self._sdt, self._device = work, sdt, device
        self.shape = (int(W.shape[0]), int(W.shape[1]))
        self.m = int(m)
        self.repair = repair
        self.candidates = tuple(candidates)
        self._J = len(self.candidates) + 1
        self._sums = xp.zeros((3 * self._J + 1,), dtype=sdt, device=device)
        self._targets: set[str] = set()  # "labels" and/or "matrix": what the hits were scored against

    @property
    def ks(self) -> tuple[int, ...]:
        """The candidate ranks, then ``m`` (the unchanged layer)."""
        return tuple(sorted({c[0] for c in self.candidates} - {self.m})) + (self.m,)

    @property
    def ridges(self) -> tuple[float, ...]:
        """The candidate ridges (empty for the paper's refit)."""
        return tuple(sorted({c[1] for c in self.candidates if c[1] is not None}))

    def update(self, X: Any, Y: Any, /) -> "HeldOutScorer":
        """Score a held-out batch: features ``(n_b, q)``, labels ``(n_b,)`` or targets ``(n_b, l)``."""
        xp = self._xp
        namespace(self._W0, X, Y)
        q, l = self.shape
        X = as_features(xp, X, q, self._work, "X_val", finite=False)
        Y, is_labels = as_targets(xp, Y, int(X.shape[0]), l, self._work, "Y_val")
        self._targets.add("labels" if is_labels else "matrix")
        sdt = self._sdt
        rowmax = None if is_labels else _row_max(xp, Y)
        Z = X @ self._W0
        check_product_finite(xp, Z, X, "X_val")
        if self._bias is not None:
            Z = Z + self._bias
        pred0 = xp.argmax(Z, axis=1)
        if is_labels:
            Yi = xp.astype(Y, pred0.dtype)
            ref = xp.astype(pred0 == Yi, sdt)
            base = ref
        else:
            picked0 = _picked(xp, pred0, Y)
            ref, base = xp.astype(picked0, sdt), xp.astype(picked0 / rowmax, sdt)
        hits, wins, losses = [], [], []
        for pred in self._candidate_predictions(X, Z):
            if is_labels:
                h = xp.astype(pred == (Yi if pred.ndim == 1 else Yi[:, None]), sdt)
                cmp = h
            else:
                p = _picked(xp, pred, Y)
                cmp = xp.astype(p, sdt)
                h = xp.astype(p / (rowmax if pred.ndim == 1 else rowmax[:, None]), sdt)
            r = ref if pred.ndim == 1 else ref[:, None]
            hits.append(xp.reshape(xp.sum(h, axis=0), (-1,)))
            wins.append(xp.reshape(xp.sum(xp.astype(cmp > r, sdt), axis=0), (-1,)))
            losses.append(xp.reshape(xp.sum(xp.astype(cmp < r, sdt), axis=0), (-1,)))
        zero = xp.zeros((1,), dtype=sdt, device=self._device)
        count = xp.asarray([float(X.shape[0])], dtype=sdt, device=self._device)
        self._add_sums(xp.concat(hits + [xp.reshape(xp.sum(base), (1,))] + wins + [zero] + losses + [zero] + [count]))
        return self

    def _candidate_predictions(self, X: Any, Z: Any) -> Any:
        """Yield the candidates' ``argmax`` predictions for a batch, in the order of
        :attr:`candidates`: arrays ``(n_b,)`` (one candidate) or ``(n_b, g)`` (``g`` of them)."""
        raise NotImplementedError

    def _block(self, j: int) -> tuple[float, ...]:
        J = self._J
        return tuple(float(v) for v in self._sums[j * J:(j + 1) * J])

    def scores(self) -> tuple[float, ...]:
        """Mean hit score per candidate (order of :attr:`candidates`), then the unchanged layer's."""
        n = self.n_samples
        if n == 0:
            raise DataError("the scorer has seen no held-out data: call update(X_val, Y_val) first")
        return tuple(h / n for h in self._block(0))

    def p_values(self) -> tuple[float, ...]:
        """One-sided sign-test p-value per candidate: ``P[Bin(w + l, 1/2) >= w]`` for ``w`` wins
        and ``l`` losses against the unchanged layer (1, not computed, where ``w <= l``)."""
        return _p_values(self._block(1)[:-1], self._block(2)[:-1])

    # ------------------------------------------------------------------ guard
    def best(self, min_gain: float = 0.0, confidence: float | None = DEFAULT_CONFIDENCE, *,
             guarded: bool = True) -> Selection:
        """Choose among the candidates, behind the guard.

        Steps
        -----
        1. (``guarded``, the automatic rank) A candidate qualifies if its
           held-out score beats the unchanged layer's by more than
           ``min_gain`` and, unless ``confidence`` is None, its sign-test
           p-value is below ``(1 - confidence) / C`` (Bonferroni over the ``C``
           candidates). None qualifies: the layer is left as it is (``k = m``).
        2. Among the qualifying candidates the highest score wins; ties go to
           the smaller change (larger ``k``, then larger ``lam``).
        3. ``guarded=False`` (a fixed rank whose ridge is chosen on held-out
           data: the user forced the change): the best-scoring candidate wins,
           with no test against the unchanged layer.
        """
        confidence = check_confidence(confidence)
        min_gain = check_min_gain(min_gain)
        scores = self.scores()
        pvals = self.p_values()
        base = scores[-1]
        C = len(self.candidates)
        if guarded:
            alpha = None if confidence is None else (1.0 - confidence) / max(1, C)
            ok = [i for i in range(C) if scores[i] > base + min_gain and (alpha is None or pvals[i] < alpha)]
        else:
            ok = list(range(C))
        k, lam, labels = self.m, None, "given"

        def key(i: int) -> tuple:
            kk, ll = self.candidates[i][:2]
            given = _labels_of(self.candidates[i]) == "given"  # a tie goes to the labels as given
            return scores[i], kk, given, -1.0 if ll is None else ll

        if ok:
            best = self.candidates[max(ok, key=key)]
            k, lam, labels = best[0], best[1], _labels_of(best)
        ks, ridges = self.ks, self.ridges
        table: tuple[tuple[float, ...], ...] = ()
        extra_labels: dict = {}
        for i, c in enumerate(self.candidates):
            if _labels_of(c) != "given":
                extra_labels.setdefault(c[2], [float("nan")] * len(ridges))[ridges.index(c[1])] = scores[i]
        if ridges:
            at = {c: scores[i] for i, c in enumerate(self.candidates) if len(c) == 2}
            table = tuple(tuple(at.get((kk, r), float("nan")) for r in ridges) for kk in ks[:-1])
            per_rank = tuple(max(v for v in row if v == v) for row in table) + (base,)
        else:
            at_k = {c[0]: scores[i] for i, c in enumerate(self.candidates)}
            per_rank = tuple(at_k[kk] for kk in ks[:-1]) + (base,)
        extra = {"min_gain": float(min_gain), "confidence": confidence, "guarded": bool(guarded),
                 "metric": METRICS["labels" if self._targets == {"labels"} else "matrix"],
                 "p_values": list(pvals), "wins": list(self._block(1)[:-1]), "losses": list(self._block(2)[:-1])}
        if ridges:
            extra["candidates"] = [list(c) for c in self.candidates]
        if extra_labels:
            extra["label_scores"] = extra_labels
        return Selection(k=k, m=self.m, strategy="auto", ks=ks, scores=per_rank, base_score=base,
                         n_val=self.n_samples, ridge=lam, ridges=ridges, table=table, tail=self.repair,
                         labels=labels, extra=extra)


#: The labels a candidate head can be fit on: as given, or (beyond the paper, the ``"labels"``
#: repair) without the rows flagged as mislabelled, or with them relabelled.
LABEL_VARIANTS = ("given", "filter", "relabel", "neighbours")


def _labels_of(candidate: tuple) -> str:
    return candidate[2] if len(candidate) > 2 else "given"


class StackedScorer(HeldOutScorer):
    """A :class:`HeldOutScorer` over explicit candidate weights ``(W_j, b_j)``.

    Candidates are stacked into groups, one ``(q, g l)`` matmul per group and
    batch instead of ``g`` small ones (the per-call overhead dominated on small
    heads); ``g l <= SCORE_GROUP_COLUMNS`` bounds a batch's ``(n_b, g l)`` logits.
    Any repair whose candidates are whole weights uses it.

    Parameters
    ----------
    W, bias : the unchanged layer (``bias`` None when it has none)
    m : int
        ``min(q, l)`` (the rank of "unchanged").
    repair : str
        The repair's name (reported in the :class:`Selection`).
    candidates : sequence of (k, lam)
    build : callable
        ``build(j) -> (W_j, b_j)``: candidate ``j``'s weight and bias (``b_j``
        None: the layer's own bias), called once each, in order.
    on_build : callable, optional
        Called after each candidate is built (progress).
    """

    def __init__(self, W: Any, bias: Any, m: int, repair: str, candidates: Sequence[tuple[int, float | None]],
                 build: Any, /, *, xp: Any, work: Any, sdt: Any, device: Any, on_build: Any = None) -> None:
        super().__init__(W, bias, m, repair, candidates, xp=xp, work=work, sdt=sdt, device=device)
        l = self.shape[1]
        group = max(1, SCORE_GROUP_COLUMNS // max(l, 1))
        self._groups: list[tuple[Any, Any, int]] = []
        Ws: list[Any] = []
        bs: list[Any] = []

        def flush() -> None:
            if Ws:
                Bg = None
                if self._bias is not None or any(b is not None for b in bs):
                    own = self._bias if self._bias is not None else xp.zeros((l,), dtype=work, device=device)
                    Bg = xp.stack([own if b is None else to_float(xp, b, work) for b in bs], axis=0)
                self._groups.append((xp.concat(Ws, axis=1), Bg, len(Ws)))
                Ws.clear()
                bs.clear()

        for j in range(len(self.candidates)):
            W_j, b_j = build(j)
            Ws.append(to_float(xp, W_j, work))
            bs.append(b_j)
            if len(Ws) == group:
                flush()
            if on_build is not None:
                on_build()
        flush()

    @property
    def weights(self) -> list[Any]:
        """The candidate weights (order of :attr:`candidates`), as views of the stacked groups."""
        l = self.shape[1]
        return [Wg[:, i * l:(i + 1) * l] for Wg, _, g in self._groups for i in range(g)]

    def _candidate_predictions(self, X: Any, Z: Any) -> Any:
        xp = self._xp
        n_b, l = int(X.shape[0]), self.shape[1]
        for Wg, Bg, g in self._groups:
            Zg = xp.reshape(X @ Wg, (n_b, g, l))
            if Bg is not None:
                Zg = Zg + Bg[None, :, :]
            yield xp.argmax(Zg, axis=2)


def check_candidates(values: Any, name: str, parse: Any) -> list:
    """A non-empty sequence of candidate values (ranks or ridges), each read by ``parse``."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise OptionError(f"{name} must be a sequence; got {values!r}")
    out = sorted({parse(v) for v in values})
    if not out:
        raise OptionError(f"{name} must hold at least one value")
    return out

