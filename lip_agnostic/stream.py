"""LIP over a stream of batches: the one entry point every face (PyTorch, Keras, ONNX) calls."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Literal

from ._arrays import count_true, device_of, namespace
from .accumulator import LIPAccumulator, TargetScale
from .errors import DataError, OptionError
from .full_tail import FullTailAccumulator, FullTailSelection, _check_ridge, check_tail, resolve_tail
from .options import UNSET, BiasMode, bias_mode_from_fit_bias, check_holdout, parse_rank
from .principal import SVD
from .rank import DEFAULT_CONFIDENCE, RankScorer, RankSelection, select_rank
from .report import ChangeSummary, summarize_change, summarize_refit

__all__ = ["LIPResult", "refine_batches", "DEFAULT_HOLDOUT"]

#: Fraction of the fit stream held out to score ranks when ``rank="auto"`` has no validation data.
DEFAULT_HOLDOUT = 0.2

AllReduce = Callable[[Any], Any]


@dataclass(frozen=True)
class LIPResult:
    """Outcome of :func:`refine_batches`.

    Attributes
    ----------
    weight : array (q, l)
        ``W*``, in the input weight's library, device and dtype (``W`` itself,
        copied, when the selection keeps every component).
    selection : RankSelection
        The ``k`` used and the evidence for it.
    summary : ChangeSummary
        Spectrum before/after, whether the kept components are unchanged
        (measured), the top-``k`` subspace angle, relative change.
    n_fit : int
        Samples whose statistics went into the refit (all workers).
    n_degenerate : int
        Tail components with ~zero data energy (handled per ``degenerate``);
        ``tail="full"``: directions of the complement the data never excite.
    bias : array (l,) or None
        ``tail="full"`` with a bias and ``bias_mode="fit"``: the refit bias ``b*`` to
        write into the layer with the weight; None: the bias stays as it is.
    tail : {"diagonal", "full"}
        Which refit ran: ``"diagonal"`` is the paper's, ``"full"`` is beyond the paper.
    context : dict
        Facts a face adds about its own run (JSON-friendly values: the
        layer's dtype and device, batch counts, seconds, ...); empty from the
        core itself.

    Every face (PyTorch, Keras, ``lip-onnx``, ...) returns this same object.
    ``result["k"]``-style access, what the PyTorch face's old dict report
    offered, still works for one release with a ``FutureWarning``
    (:meth:`__getitem__`).
    """

    weight: Any
    selection: RankSelection
    summary: ChangeSummary
    n_fit: int
    n_degenerate: int
    bias: Any = None
    tail: str = "diagonal"
    context: dict = field(default_factory=dict)
    tail_reason: str = ""

    @property
    def k(self) -> int:
        """The rank used (``selection.k``)."""
        return self.selection.k

    @property
    def changed(self) -> bool:
        """Whether ``W*`` differs from ``W`` (``selection.changed``)."""
        return self.selection.changed

    def to_dict(self) -> dict:
        """JSON-friendly report (the weight itself left out; ``context`` when a face set one)."""
        out = {
            "tail": self.tail,
            "beyond_paper": self.tail != "diagonal",
            "bias_refit": self.bias is not None,
            **({"tail_reason": self.tail_reason} if self.tail_reason else {}),
            "selection": self.selection.to_dict(),
            "summary": self.summary.to_dict(),
            "n_fit": self.n_fit,
            "n_degenerate": self.n_degenerate,
        }
        if self.context:
            out["context"] = dict(self.context)
        return out

    # -- the PyTorch face's old dict report, for one release
    def _legacy(self) -> dict:
        d = self.to_dict()
        d.pop("context", None)
        d.update(k=self.selection.k, changed=self.selection.changed, top_k_angle=self.summary.top_k_angle,
                 kept_unchanged=self.summary.kept_unchanged, principal_angle=self.summary.top_k_angle)
        d.update(self.context)
        return d

    def __getitem__(self, key: str) -> Any:
        """Deprecated dict-style access (``result["k"]``): the old PyTorch report's keys.

        Use the attributes (``result.k``, ``result.selection``,
        ``result.summary``, ``result.context[...]``) or ``result.to_dict()``.
        """
        import warnings

        d = self._legacy()
        if key not in d:
            raise KeyError(key)
        warnings.warn(f"result[{key!r}] is deprecated: LIPResult is not a dict; use its attributes "
                      "(.k, .selection, .summary, .context[...]) or .to_dict()", FutureWarning, stacklevel=2)
        return d[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Deprecated dict-style ``get`` (see :meth:`__getitem__`)."""
        return self[key] if key in self._legacy() else default

    def keys(self) -> Any:
        """Deprecated: the old PyTorch report's keys (see :meth:`__getitem__`)."""
        import warnings

        warnings.warn("LIPResult.keys() is deprecated: LIPResult is not a dict; use .to_dict()",
                      FutureWarning, stacklevel=2)
        return self._legacy().keys()

    def __contains__(self, key: object) -> bool:
        return key in self._legacy()


def _split_rows(xp: Any, X: Any, Y: Any, offset: int, period: int) -> tuple[Any, Any, Any, Any]:
    """Rows whose global index ``i`` has ``i % period == period - 1`` go to the hold-out."""
    idx = xp.arange(int(X.shape[0]), device=device_of(X))
    mask = (idx + offset) % period == period - 1
    if not bool(xp.any(mask)):
        return X, Y, None, None
    hi, ki = xp.nonzero(mask)[0], xp.nonzero(~mask)[0]
    return (xp.take(X, ki, axis=0), xp.take(Y, ki, axis=0),
            xp.take(X, hi, axis=0), xp.take(Y, hi, axis=0))


def refine_batches(
    W: Any,
    batches: Iterable[tuple[Any, Any]],
    /,
    *,
    rank: int | float | str = "auto",
    validation: Iterable[tuple[Any, Any]] | None = None,
    holdout: float = DEFAULT_HOLDOUT,
    bias: Any = None,
    bias_mode: BiasMode = "fit",
    target_scale: TargetScale = 1.0,
    degenerate: Literal["zero", "keep"] = "zero",
    rtol: float | None = None,
    min_gain: float = 0.0,
    confidence: float | None = DEFAULT_CONFIDENCE,
    all_reduce: AllReduce | None = None,
    tail: Literal["auto", "diagonal", "full"] = "auto",
    ridge: float | str | None = None,
    svd: SVD | None = None,
    xp: Any = None,
    fit_bias: bool = UNSET,
) -> LIPResult:
    """Run LIP over ``(features, labels)`` batches; return ``W*`` and a report.

    Steps
    -----
    1. Stream ``batches`` into a :class:`LIPAccumulator` (tail only for a
       fixed or energy ``rank``; every component for ``"auto"``).
    2. ``all_reduce`` (if given: a function that sums an array over workers
       and returns the total) merges the statistics, so every worker ends
       with the same ``W*`` as one process over the union of the data.
    3. ``rank="auto"``: score every candidate ``k`` on ``validation`` batches
       (a second pass); without them, every ``round(1 / holdout)``-th sample
       of the stream is held out of the fit and scored instead (rows on the
       model's own training set: the choice then leans to "change nothing").
       The hit counts are all-reduced too.
    4. ``W* = accumulator.result(k)``; summarize the change.

    ``tail="full"`` (**beyond the paper**) runs the same stream through a
    :class:`lip_agnostic.FullTailAccumulator` instead: the top-``k``
    components are kept, the whole complement is ridge-refit (and the bias,
    when given with ``bias_mode="fit"``: :attr:`LIPResult.bias`), and ``"auto"``
    scores every ``(k, lam)`` of the grid behind the same guard.

    Parameters
    ----------
    W : array (q, l)
    batches : iterable of (X (n_b, q), Y (n_b,) or (n_b, l))
    rank : int, float in (0, 1], or "auto"
    validation : iterable of (X, Y), optional
    holdout : float in (0, 0.5]
    bias, bias_mode, target_scale, degenerate, rtol, min_gain, confidence
        As in :func:`lip_agnostic.lip_refine` (``fit_bias=`` is the deprecated
        spelling of ``bias_mode=``).
    all_reduce : callable, optional
    tail : {"auto", "diagonal", "full"}
        ``"auto"`` (default): the full tail for ``rank="auto"`` (its guarded
        choice met the adoption rule of the committed study, docs/EVIDENCE.md),
        the paper's diagonal for a fixed or energy rank (see
        :func:`lip_agnostic.full_tail.resolve_tail`; the reason is in the
        report's ``tail_reason``); ``"diagonal"``: the paper, always;
        ``"full"``: the full-tail ridge refit (beyond the paper), always.
        :func:`lip_agnostic.lip_refine` stays the paper's method.
    ridge : float or "auto", optional
        ``tail="full"`` only (default ``"auto"``, chosen on the held-out data).
    svd : SVD, optional
        The reduced SVD of ``W`` (:func:`lip_agnostic.reduced_svd`) when the
        caller already has it. Otherwise it is computed once here and every
        later step (rank selection, scoring, the refit, the summary) reuses it:
        one factorization per call.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import refine_batches
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(8, 4))
    >>> data = [(rng.normal(size=(30, 8)), rng.integers(0, 4, 30)) for _ in range(3)]
    >>> res = refine_batches(W, data, rank=2)
    >>> res.weight.shape, res.selection.k
    ((8, 4), 2)
    """
    xp = namespace(W, bias, xp=xp)
    bias_mode = bias_mode_from_fit_bias(bias_mode, fit_bias)
    rank = parse_rank(rank, name="rank")
    requested = tail
    tail, reason = resolve_tail(tail, rank, _shape_of(W), ridge=ridge, degenerate=degenerate,
                                itemsize=_itemsize(W))
    full = check_tail(tail, ridge, degenerate)
    auto_rank = rank == "auto"
    lam = _check_ridge("auto" if ridge is None else ridge) if full else None
    auto = auto_rank or lam == "auto"
    if auto and validation is None:
        holdout = check_holdout(holdout)
    if full:
        acc: Any = FullTailAccumulator(W, None if auto_rank else rank, bias=bias, bias_mode=bias_mode,
                                       target_scale=target_scale, rtol=rtol, svd=svd, xp=xp)
    else:
        acc = LIPAccumulator(W, None if auto else rank, bias=bias, bias_mode=bias_mode, target_scale=target_scale,
                             degenerate=degenerate, rtol=rtol, svd=svd, xp=xp)
    period = max(2, int(round(1.0 / float(holdout)))) if auto and validation is None else 0
    held: list[tuple[Any, Any]] = []
    seen = 0
    for X, Y in batches:
        n_b = int(X.shape[0]) if getattr(X, "ndim", 0) >= 1 else 0
        if period:
            X, Y, Xh, Yh = _split_rows(xp, X, Y, seen % period, period)
            if Xh is not None:
                held.append((Xh, Yh))
        if int(X.shape[0]):
            acc.update(X, Y)
        seen += n_b
    if all_reduce is not None:
        acc.load_partial_sums(all_reduce(acc.partial_sums))
    if acc.n_samples == 0:
        raise DataError("no samples reached LIP: the batches were empty")

    if auto:
        scorer = acc.scorer(ridges=None if lam == "auto" else [lam]) if full else RankScorer(acc)
        for X, Y in (validation if validation is not None else held):
            scorer.update(X, Y)
        if all_reduce is not None:
            scorer.load_partial_sums(all_reduce(scorer.partial_sums))
        if scorer.n_samples == 0:
            raise DataError("rank='auto' got no held-out samples to score (empty validation data)")
        selection = scorer.best(min_gain, confidence)
        extra = dict(selection.extra, source="validation" if validation is not None else f"holdout 1/{period}")
        selection = type(selection)(**{**selection.__dict__, "extra": extra})
    elif full:
        selection = FullTailSelection(k=acc.rank, m=acc.svd.rank_max, strategy="fixed", ridge=lam, ridges=(lam,))
    else:
        selection = select_rank(W, rank, svd=acc.svd, xp=xp)
    if full:
        return replace(_full_result(xp, acc, W, selection), tail_reason=_reason(requested, reason))
    W_new = acc.result(selection.k)
    k0 = acc.tracked[0]
    n_deg = count_true(xp, acc.degenerate_mask()[selection.k - k0:]) if selection.k < acc.svd.rank_max else 0
    return LIPResult(
        weight=W_new,
        selection=selection,
        summary=summarize_refit(acc.svd.s, acc.refit_spectrum(selection.k), selection.k, shape=acc.shape,
                                V=acc.svd.V, W_before=W, W_after=W_new, xp=xp),
        n_fit=acc.n_samples,
        n_degenerate=n_deg,
        tail_reason=_reason(requested, reason),
    )


def _reason(requested: Any, reason: str) -> str:
    """The report's ``tail_reason``: set only when ``tail="auto"`` chose."""
    return reason if isinstance(requested, str) and requested == "auto" else ""


def _shape_of(W: Any) -> tuple[int, int]:
    shape = tuple(getattr(W, "shape", ()))
    return (int(shape[0]), int(shape[1])) if len(shape) == 2 else (0, 0)


def _itemsize(W: Any) -> int:
    try:
        return int(W.dtype.itemsize)
    except (AttributeError, TypeError):
        return 4



def _full_result(xp: Any, acc: FullTailAccumulator, W: Any, selection: RankSelection) -> LIPResult:
    """``W*`` (and ``b*``) of the full-tail refit at the selected ``(k, lam)``, with its report."""
    k, m = selection.k, acc.svd.rank_max
    lam = getattr(selection, "ridge", None)
    out = acc.result(k, 0.0 if lam is None else lam)
    W_new, b_new = out if acc.fits_bias else (out, None)
    n_deg = 0
    if k < m:
        e = acc._solver(k)[0]
        ref = float(xp.max(e)) if int(e.shape[0]) else 0.0
        n_deg = count_true(xp, e <= acc.rtol * ref)
    return LIPResult(
        weight=W_new,
        selection=selection,
        summary=summarize_change(W, W_new, k, svd=acc.svd, xp=xp),
        n_fit=acc.n_samples,
        n_degenerate=n_deg,
        bias=None if k == m else b_new,
        tail="full",
    )
