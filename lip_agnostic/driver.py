"""The one driver: a repair over a stream of batches, behind the guard. Every face calls it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

from ._arrays import device_of, namespace
from .errors import DataError, DataTypeError, NonFiniteError, OptionError, OptionTypeError
from .label_issues import LabelIssues, find_label_issues
from .options import LIPOptions
from .out_of_fold import require_reiterable
from .progress import Progress, as_progress
from .repairs import REPAIRS
from .report import ChangeSummary, summarize_change
from .selection import Selection
from .svd import SVD, check_factors
from .temperature import HeadCalibration, calibrate_head

__all__ = ["LIPResult", "refine_batches"]

AllReduce = Callable[[Any], Any]


@dataclass(frozen=True)
class LIPResult:
    """Outcome of :func:`refine_batches` (every face returns this same object).

    ``print(result)`` gives the outcome in a few lines; :meth:`to_dict` the
    whole report (JSON-friendly, with the same :attr:`outcome` sentence).

    Attributes
    ----------
    weight : array (q, l)
        ``W*``, in the input weight's library, device and dtype (a copy of
        ``W`` when nothing changed).
    selection : Selection
        The candidate used (``k``, and the ridge for the full tail) and the
        evidence for it (held-out scores, the guard's p-values).
    summary : ChangeSummary
        Spectrum before/after, whether the kept components are unchanged
        (measured), the top-``k`` subspace angle, relative change.
    n_fit : int
        Samples whose statistics went into the refit (all workers).
    n_degenerate : int
        Refit directions the data never excite.
    bias : array (l,) or None
        The refit bias ``b*`` to write into the layer with the weight (the
        full tail with a bias and ``bias_mode="fit"``); None: the bias stays.
    tail : {"diagonal", "full", "labels"}
        Which repair ran: ``"diagonal"`` is the paper's, ``"full"`` and ``"labels"``
        (``label_repair``) are beyond the paper.
    tail_reason : str
        Why ``tail="auto"`` chose it (empty when the tail was given).
    options : LIPOptions or None
        The options the run used.
    label_issues : LabelIssues or None
        With ``label_repair`` or ``label_issues=True``: the rows of the fit stream whose given
        label looks wrong (beyond the paper; :func:`lip_agnostic.label_issues.find_label_issues`).
    calibration : HeadCalibration or None
        With ``temperature=True`` after a change beyond the paper: the temperature fit on
        the held-out data, whether it was written into the head, and the held-out NLL and
        ECE of the unchanged layer and of the new head before and after it.
    context : dict
        Facts a face adds about its own run (JSON-friendly: the layer's name,
        dtype, batch counts, seconds, ...); empty from the core itself.
    """

    weight: Any
    selection: Selection
    summary: ChangeSummary
    n_fit: int
    n_degenerate: int
    bias: Any = None
    tail: str = "diagonal"
    tail_reason: str = ""
    options: LIPOptions | None = None
    label_issues: LabelIssues | None = None
    calibration: HeadCalibration | None = None
    context: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        """The rank used (``selection.k``)."""
        return self.selection.k

    @property
    def changed(self) -> bool:
        """Whether ``W*`` differs from ``W`` (``selection.changed``)."""
        return self.selection.changed

    @property
    def beyond_paper(self) -> bool:
        """Whether the repair that ran is not the paper's."""
        return self.tail != "diagonal"

    @property
    def outcome(self) -> str:
        """One sentence: what happened to the layer, and why when it was left unchanged."""
        sel, m = self.selection, self.selection.m
        if sel.strategy == "auto" and not sel.changed:
            conf = sel.extra.get("confidence")
            n_cand = len(sel.extra.get("p_values", ()))
            full = sel.tail in ("full", "labels")
            guard = (f"one-sided sign test, confidence {conf:g}, Bonferroni over {n_cand} "
                     f"{'(k, ridge) candidates' if full else 'ranks'}" if conf is not None
                     else "no significance test (confidence None)")
            source = sel.extra.get("source", "")
            held = (f"the validation data ({sel.n_val} samples)" if source == "validation"
                    else f"every {source.split('/')[-1]}th fit sample, held out of the fit ({sel.n_val} samples)"
                    if source.startswith("holdout 1/") else f"{sel.n_val} held-out samples")
            return (f"unchanged: no {'(k, ridge) candidate' if full else f'k < {m}'} beat the unchanged model's "
                    f"{sel.extra.get('metric', 'held-out score')} ({sel.base_score:.4f}) significantly ({guard}; "
                    f"min_gain {sel.extra.get('min_gain', 0.0):g}) on {held}, so the weights are the input's; "
                    "a fixed rank forces a change")
        if not sel.changed:
            return f"unchanged: k={sel.k} keeps all {m} components"
        temp = (f"; logits x {self.calibration.fit.scale:.3g} (temperature)"
                if self.calibration is not None and self.calibration.applied else "")
        if sel.labels != "given":
            n_f = self.label_issues.n_flagged if self.label_issues is not None else 0
            n_nb = sel.extra.get("relabelled_by_neighbours", 0)
            how = {"filter": f"refit without the {n_f} fit rows flagged as mislabelled",
                   "relabel": f"refit with the {n_f} fit rows flagged as mislabelled relabelled",
                   "neighbours": f"refit with the {n_nb} fit rows whose nearest neighbours out-vote their label "
                                 "relabelled"}[sel.labels]
            bias = ", bias refit" if self.bias is not None else ""
            return f"changed: a ridge head {how}; ridge {sel.ridge:.4g}{bias}{temp}; beyond the paper"
        if self.tail in ("full", "labels"):
            head = ("a ridge head (k=0: no component kept, the whole layer ridge-refit against the labels)"
                    if sel.k == 0 else
                    f"the top {sel.k} of {m} components kept, the whole complement ridge-refit against the labels")
            bias = ", bias refit" if self.bias is not None else ""
            return f"changed: {head}; ridge {sel.ridge:.4g}{bias}{temp}; beyond the paper"
        return (f"changed: the top {sel.k} of {m} components kept, the other {m - sel.k} singular values "
                "refit against the labels (the paper's LIP)")

    def __str__(self) -> str:
        sel, s = self.selection, self.summary
        q, l = s.shape
        ran = {"diagonal": "diagonal (the paper's LIP)", "full": "full tail (beyond the paper)",
               "labels": "label-aware: full tail plus filtered/relabelled ridge heads (beyond the paper)"}[self.tail]
        lines = [f"LIPResult: {self.outcome}",
                 f"  repair: {ran}" + (f"; {self.tail_reason}" if self.tail_reason else ""),
                 f"  head: W (q={q}, l={l}), fit on {self.n_fit} samples, rank k={sel.k} of {sel.m}"
                 + (f", ridge {sel.ridge:.4g}" if sel.ridge is not None and sel.changed else "")]
        if sel.strategy == "auto" and sel.base_score is not None:
            src = sel.extra.get("source", "held-out data")
            if sel.changed:
                other = f"chosen {sel.best_score:.4f}"
            else:
                tried = [v for v in sel.scores[:-1] if v == v]
                other = f"best candidate {max(tried):.4f} (not significant)" if tried else "no candidate"
            lines.append(f"  held-out score ({src}, {sel.n_val} samples): unchanged {sel.base_score:.4f}, {other}")
        if sel.changed:
            lines.append(f"  change: relative {s.relative_change:.3g}; kept components unchanged: {s.kept_unchanged}")
        if self.label_issues is not None:
            lines.append(f"  label issues: {self.label_issues} (result.label_issues.rows())")
        if self.calibration is not None:
            lines.append(f"  {self.calibration}")
        return "\n".join(line for line in lines if line)

    def __repr__(self) -> str:
        q, l = self.summary.shape
        return (f"LIPResult(tail={self.tail!r}, k={self.k}, m={self.selection.m}, changed={self.changed}, "
                f"W=(q={q}, l={l}), n_fit={self.n_fit})")

    def to_dict(self) -> dict:
        """JSON-friendly report (the weight itself left out; ``context`` when a face set one)."""
        out = {
            "outcome": self.outcome,
            "tail": self.tail,
            "beyond_paper": self.beyond_paper,
            "bias_refit": self.bias is not None,
            **({"tail_reason": self.tail_reason} if self.tail_reason else {}),
            "selection": self.selection.to_dict(),
            "summary": self.summary.to_dict(),
            "n_fit": self.n_fit,
            "n_degenerate": self.n_degenerate,
        }
        if self.options is not None:
            out["options"] = self.options.to_dict()
        if self.label_issues is not None:
            out["label_issues"] = {"method": self.label_issues.method, "n_flagged": self.label_issues.n_flagged,
                                   "n_rows": int(self.label_issues.suspects.flags.shape[0])}
        if self.calibration is not None:
            out["calibration"] = self.calibration.to_dict()
        if self.context:
            out["context"] = dict(self.context)
        return out


def _split_rows(xp: Any, X: Any, Y: Any, offset: int, period: int) -> tuple[Any, Any, Any, Any]:
    """Rows whose global index ``i`` has ``i % period == period - 1`` go to the hold-out."""
    idx = xp.arange(int(X.shape[0]), device=device_of(X))
    mask = (idx + offset) % period == period - 1
    if not bool(xp.any(mask)):
        return X, Y, None, None
    hi, ki = xp.nonzero(mask)[0], xp.nonzero(~mask)[0]
    return (xp.take(X, ki, axis=0), xp.take(Y, ki, axis=0),
            xp.take(X, hi, axis=0), xp.take(Y, hi, axis=0))


def _batch(item: Any, i: int, where: str, W: Any) -> tuple[Any, Any]:
    """One ``(X, Y)`` batch of a stream, or a one-line error naming what it is instead."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        what = f"a {type(item).__name__} of length {len(item)}" if isinstance(item, (tuple, list)) \
            else f"a {type(item).__name__}"
        raise DataTypeError(f"{where} batch {i} must be a pair (X, Y) of arrays; got {what}")
    X, Y = item
    if getattr(X, "ndim", None) is None or getattr(Y, "ndim", None) is None:
        raise DataTypeError(f"{where} batch {i} must be a pair (X, Y) of arrays; "
                            f"got ({type(X).__name__}, {type(Y).__name__})")
    namespace(W, X, Y)  # one library for the weight and the data (DataTypeError otherwise)
    if X.ndim >= 1 and Y.ndim >= 1 and int(X.shape[0]) != int(Y.shape[0]):
        what = "labels" if Y.ndim == 1 else "target rows"
        raise DataError(f"{where} batch {i} has {int(X.shape[0])} rows but Y has {int(Y.shape[0])} {what}: "
                        "features and labels must pair up row by row")
    return X, Y


def _batches(source: Any, where: str, W: Any) -> Iterable[tuple[Any, Any]]:
    for i, item in enumerate(source):
        yield _batch(item, i, where, W)


def _as_stream(validation: Any) -> Any:
    """Validation batches; a pair of arrays ``(X_val, Y_val)`` (as :func:`lip_refine` takes it) is one batch."""
    if (isinstance(validation, tuple) and len(validation) == 2
            and all(getattr(a, "ndim", None) is not None for a in validation)):
        return [validation]
    return validation


def refine_batches(
    W: Any,
    batches: Iterable[tuple[Any, Any]],
    /,
    *,
    validation: Iterable[tuple[Any, Any]] | tuple[Any, Any] | None = None,
    bias: Any = None,
    all_reduce: AllReduce | None = None,
    svd: SVD | None = None,
    options: LIPOptions | None = None,
    progress: bool | Progress | None = None,
    label_issues: bool = False,
    xp: Any = None,
    **option_values: Any,
) -> LIPResult:
    """Repair a trained head over ``(features, labels)`` batches; return ``W*`` and a report.

    Steps
    -----
    1. Options: ``options`` (a :class:`lip_agnostic.options.LIPOptions`) or the
       same names as keywords (``rank="auto"``, ``tail="auto"``, ``ridge``,
       ``bias_mode``, ``target_scale``, ``degenerate``, ``rtol``, ``min_gain``,
       ``confidence``, ``holdout``), parsed once. Its :meth:`~LIPOptions.plan`
       picks the repair: with ``tail="auto"`` the full tail (beyond the paper)
       for ``rank="auto"``, the paper's diagonal refit for a fixed rank.
    2. Stream ``batches`` into the repair's statistics. When something is
       chosen on held-out data and no ``validation`` is given, every
       ``round(1 / holdout)``-th sample is held out of the fit instead (rows of
       the model's own training set: the choice then leans to "change nothing").
    3. ``all_reduce`` (a function that sums an array over workers and returns
       the total) merges the statistics, so every worker ends with the same
       ``W*`` as one process over the union of the data.
    4. ``rank="auto"``: every candidate is scored on the held-out data in one
       pass and the guard (a one-sided sign test against the unchanged layer,
       Bonferroni over the candidates, plus ``min_gain``) picks one or leaves
       the layer unchanged. A fixed rank with the full tail's ``ridge="auto"``
       picks the best ridge (the rank forces the change).
    5. Build ``W*`` (and ``b*``) and summarize the change.
    6. ``temperature=True`` after a change beyond the paper: one scalar ``T``
       minimises the held-out NLL of ``softmax(T (X W* + b*))``
       (:func:`lip_agnostic.temperature.calibrate_head`, over every worker's
       held-out rows with ``all_reduce``); it is written into ``W*`` and ``b*``
       when no component is kept exactly (``k = 0``) and the bias is refit.

    Parameters
    ----------
    W : array (q, l)
        The trained head (PyTorch ``Linear.weight.T``, Keras ``Dense.kernel``).
    batches : iterable of (X (n_b, q), Y (n_b,) or (n_b, l))
        Features entering the head, and labels or target rows.
    validation : iterable of (X, Y), or one pair (X_val, Y_val) of arrays, optional
        Held-out data (noisy labels are fine); only allowed when something is
        chosen on held-out data.
    bias : array (l,), optional
        The layer's bias (the fit targets ``Y - 1 b^T`` with ``bias_mode="fit"``;
        the held-out logits always include it).
    all_reduce : callable, optional
        Sums an array over workers and returns the total (step 3). Every worker
        calls it the same number of times in the same order (the fit statistics,
        the held-out scores, each step of the temperature fit).
    svd : SVD, optional
        The reduced SVD of ``W`` when the caller already has it; otherwise it is
        computed once here and reused by every later step.
    options : LIPOptions, optional
        All options at once (then pass none as keywords).
    progress : bool or Progress, optional
        Progress lines on stderr for the statistics pass, the candidates and
        the held-out pass once a step has run two seconds; ``None`` (default):
        on a terminal only (:mod:`lip_agnostic.progress`).
    label_issues : bool
        Also find the fit rows whose given label looks wrong (beyond the paper:
        out-of-fold confident learning, :func:`lip_agnostic.label_issues.find_label_issues`),
        reported in :attr:`LIPResult.label_issues` by their position in the
        stream. It needs integer labels and a re-iterable ``batches`` (a
        list, a DataLoader without shuffling; a one-shot generator is refused
        before anything is read): the out-of-fold scores take a second look
        at the fit rows. The first pass keeps a copy of them while they take
        at most :data:`FIT_ROW_CACHE_BYTES` (1 GiB), and the second pass reads
        that copy; past it, ``batches`` is read again (so must yield the same
        rows in the same order). ``label_repair`` works the same way.

    Examples
    --------
    >>> import numpy as np
    >>> from lip_agnostic import refine_batches
    >>> rng = np.random.default_rng(0)
    >>> W = rng.normal(size=(8, 4))
    >>> data = [(rng.normal(size=(30, 8)), rng.integers(0, 4, 30)) for _ in range(3)]
    >>> res = refine_batches(W, data, rank=2)
    >>> res.weight.shape, res.k
    ((8, 4), 2)
    """
    if options is None:
        options = LIPOptions.from_kwargs(option_values)
    elif option_values:
        raise OptionTypeError(f"pass options=LIPOptions(...) or option keywords, not both; got options= and "
                              f"{sorted(option_values)}")
    elif not isinstance(options, LIPOptions):
        raise OptionTypeError(f"options must be a lip_agnostic.LIPOptions; got {type(options).__name__}")
    prog = as_progress(progress)
    if not isinstance(label_issues, bool):
        raise OptionTypeError(f"label_issues must be True or False; got {type(label_issues).__name__}")
    if all_reduce is not None and not callable(all_reduce):
        raise OptionTypeError(f"all_reduce must be a function that sums an array over workers; "
                              f"got {type(all_reduce).__name__}")
    xp = namespace(W, bias, xp=xp)
    if getattr(W, "ndim", None) != 2:
        raise DataError(f"W must be a 2-D (q, l) weight; got shape {tuple(getattr(W, 'shape', ()))}")
    shape = (int(W.shape[0]), int(W.shape[1]))
    plan = options.plan(shape, itemsize=_itemsize(W))
    two_pass = plan.repair == "labels"
    if two_pass and all_reduce is not None:
        raise OptionError(f"label_repair={options.label_repair!r} needs every fit row in one process (confident "
                          "learning ranks rows across the whole set); drop all_reduce or label_repair")
    if label_issues or two_pass:
        require_reiterable(batches)
    if validation is not None and not plan.uses_validation:
        raise DataError(f"validation data are only used when something is chosen on held-out data (rank='auto', "
                        f"or the full tail's ridge='auto'); rank={options.rank!r} with the {plan.repair} refit "
                        "chooses nothing: drop validation= or pass rank='auto'")
    if svd is not None:
        svd = check_factors(svd, shape)
    fixed = None if plan.choose_rank else options.rank
    repair = REPAIRS[plan.repair].from_options(W, fixed, bias=bias, options=options, svd=svd, xp=xp)

    validation = _as_stream(validation)
    period = max(2, int(round(1.0 / options.holdout))) if plan.uses_validation and validation is None else 0
    fit_rows = _FitRows(batches, period, W, cache_bytes=FIT_ROW_CACHE_BYTES if (label_issues or two_pass) else 0)
    with prog.step("fit statistics") as step:
        for X, Y in fit_rows:
            if int(X.shape[0]):
                repair.update(X, Y)
            step.advance()
    held, seen = fit_rows.held, fit_rows.seen
    if all_reduce is not None:
        repair.load_partial_sums(_reduced(all_reduce, repair.partial_sums, "the fit statistics"))
    if repair.n_samples == 0:
        raise DataError("no samples reached LIP: the batches were empty")
    issues = None
    if two_pass:
        with prog.step("out-of-fold pass (label issues)") as step:
            issues = repair.second_pass(_Advancing(fit_rows.again(), step))

    calibrate = options.temperature and plan.beyond_paper and plan.uses_validation
    kept_val: list[tuple[Any, Any]] = []
    if plan.uses_validation:
        scorer = repair.scorer(plan, options, progress=prog)
        source = validation if validation is not None else held
        with prog.step("held-out scoring") as step:
            for X, Y in _batches(source, "validation" if validation is not None else "held-out", W):
                scorer.update(X, Y)
                if calibrate and validation is not None:
                    kept_val.append((X, Y))
                step.advance()
        if all_reduce is not None:
            scorer.load_partial_sums(_reduced(all_reduce, scorer.partial_sums, "the held-out scores"))
        if scorer.n_samples == 0:
            raise DataError("no held-out samples to score (the validation data were empty)" if validation is not None
                            else f"no held-out samples to score: the fit stream had {seen} samples, fewer than "
                                 f"the 1 in {period} held out; pass validation=")
        selection = scorer.best(options.min_gain, options.confidence, guarded=plan.choose_rank)
        src = "validation" if validation is not None else f"holdout 1/{period}"
        selection = _with_source(selection, src)
        if two_pass:
            selection = replace(selection, extra={**selection.extra,
                                                  "relabelled_by_neighbours": repair.n_neighbour_relabels})
        if validation is None:
            kept_val = held
    else:
        selection = repair.fixed_selection(options)
    built = repair.refit(selection)
    calibration = None
    if calibrate and selection.changed:
        reduce = None if all_reduce is None else (lambda sums: _reduced(all_reduce, sums, "the temperature fit"))
        built, calibration = _with_temperature(built, kept_val, W, bias, selection, repair.svd, reduce, xp)
    if label_issues and issues is None:
        with prog.step("label issues (two passes)", unit="step") as step:
            issues = find_label_issues(fit_rows.again(), shape[1])
            step.advance()
    if issues is not None and period:
        issues = replace(issues, held_out_period=period)
    return LIPResult(
        weight=built.weight,
        selection=selection,
        summary=built.summary,
        n_fit=repair.n_samples,
        n_degenerate=built.n_degenerate,
        bias=built.bias,
        tail=plan.repair,
        tail_reason=plan.reason if options.tail == "auto" else "",
        options=options,
        label_issues=issues,
        calibration=calibration,
    )


#: The second pass of ``label_repair`` / ``label_issues`` replays the fit rows kept from the first
#: pass while they take at most this many bytes (``n q`` features plus labels), instead of reading
#: the source again (for a face: a second forward pass of the network).
FIT_ROW_CACHE_BYTES = 1 << 30


class _FitRows:
    """The fit stream as the repair sees it, re-iterable when the source is: every
    ``period``-th row (by global position) goes to :attr:`held` instead (``period`` 0: none).

    With ``cache_bytes > 0`` a pass also keeps a copy of the fit rows while they take at most
    that many bytes, so :meth:`again` replays them without reading the source (for a network's
    features: without a second forward pass); past the limit the copy is dropped and
    :meth:`again` reads the source anew."""

    def __init__(self, source: Any, period: int, W: Any, *, keep_held: bool = True, cache_bytes: int = 0) -> None:
        self._source, self._period, self._W, self._keep = source, period, W, keep_held
        self._cache_bytes = cache_bytes
        self._cached: list[tuple[Any, Any]] | None = None
        self.held: list[tuple[Any, Any]] = []
        self.seen = 0

    def __iter__(self) -> Any:
        xp = namespace(self._W)
        self.held, self.seen = [], 0
        cached: list[tuple[Any, Any]] | None = [] if self._cache_bytes > 0 else None
        size = 0
        for X, Y in _batches(self._source, "fit", self._W):
            n_b = int(X.shape[0]) if X.ndim >= 1 else 0
            if self._period:
                X, Y, Xh, Yh = _split_rows(xp, X, Y, self.seen % self._period, self._period)
                if Xh is not None and self._keep:
                    self.held.append((Xh, Yh))
            self.seen += n_b
            if cached is not None:
                size += _nbytes(X) + _nbytes(Y)
                if size <= self._cache_bytes:
                    # a copy: a source may hand out one buffer and overwrite it batch after batch
                    cached.append((_copy(X), _copy(Y)))
                else:
                    cached = None
            yield X, Y
        self._cached = cached

    def again(self) -> Any:
        """The fit rows once more: the copy kept by the last complete pass, or the source read anew."""
        if self._cached is not None:
            return self._cached
        return _FitRows(self._source, self._period, self._W, keep_held=False)


class _Advancing:
    """A re-iterable source that advances a progress step per batch."""

    def __init__(self, source: Any, step: Any) -> None:
        self._source, self._step = source, step

    def __iter__(self) -> Any:
        for item in self._source:
            yield item
            self._step.advance()


def _with_temperature(built: Any, held: list, W: Any, bias: Any, selection: Selection, svd: SVD,
                      reduce: Any, xp: Any) -> tuple:
    """Fit one temperature for the chosen head on the held-out rows; write it where the layer can take it.

    With ``reduce`` (rows split across processes) every process fits the same ``T`` from its own rows."""
    if (not held and reduce is None) or any(getattr(Y, "ndim", None) != 1 for _, Y in held):
        return built, None
    cal = calibrate_head(held, built.weight, built.bias, W, bias, reduce=reduce, xp=xp)
    note = ""
    if selection.k > 0:
        note = f"the top {selection.k} components are kept exactly, and scaling would change them"
    elif bias is not None and built.bias is None:
        note = "the layer's bias is not refit (bias_mode='ignore'), so the logits cannot be scaled as a whole"
    if note:
        return built, replace(cal, note=note)
    T = cal.fit.scale
    weight = built.weight * T
    new_bias = None if built.bias is None else built.bias * T
    summary = summarize_change(W, weight, selection.k, svd=svd, xp=xp)
    return replace(built, weight=weight, bias=new_bias, summary=summary), replace(cal, applied=True)


def _with_source(selection: Selection, source: str) -> Selection:
    return replace(selection, extra={**selection.extra, "source": source})


def _reduced(all_reduce: AllReduce, sums: Any, what: str) -> Any:
    """``all_reduce(sums)``, checked: same shape, finite."""
    out = all_reduce(sums)
    if getattr(out, "shape", None) is None or tuple(out.shape) != tuple(sums.shape):
        raise DataError(f"all_reduce must return an array of the shape it was given {tuple(sums.shape)} for "
                        f"{what}; got {type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
    xp = namespace(sums)
    if not bool(xp.all(xp.isfinite(xp.asarray(out)))):
        raise NonFiniteError(f"all_reduce returned NaN/Inf for {what}: the reduction is broken")
    return out


def _nbytes(a: Any) -> int:
    return math.prod(int(d) for d in a.shape) * _itemsize(a)


def _copy(a: Any) -> Any:
    return namespace(a).asarray(a, copy=True)


def _itemsize(W: Any) -> int:
    try:
        return int(W.dtype.itemsize)
    except (AttributeError, TypeError):
        return 4
